from kvmctx.cli.main import entry

entry()
