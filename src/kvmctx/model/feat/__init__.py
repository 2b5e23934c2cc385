"""Feature modules (see kvmctx.model.features); each registers itself on import."""
