//! kvmctx's native search core.
//!
//! The breadth-first search of kvmctx/engines/checker.py, with every model
//! step answered by decision trees learned from the Python model at run time
//! (kvmctx/engines/learn.py explains why that is exact). Nothing here knows
//! what a CPU, a task or a register is: the model is the Python code, the
//! trees are its memo, and the canonicalisation tables come from canon.py.
//!
//! Order of work, identical to the Python engine: levels in order; within a
//! level parents in id order; within a parent the enabled actions in the
//! order `Model.enabled` returned them. With `jobs > 1` the expansions of a
//! block of parents run on worker threads against read-only trees, and the
//! results are merged in that same order on the calling thread (which also
//! runs the Python model on every tree miss), so state ids, counts and the
//! first violation do not depend on `jobs`.

mod canon;
mod store;
mod tree;

use hashbrown::HashMap;
use std::time::Instant;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use canon::{Canon, Relabel};
use store::Store;
use tree::{Lookup, Tree};

create_exception!(_native, ImpureStep, PyException);

type Act = (i32, i32, i32);

struct ApLeaf {
    writes: Vec<(u32, i32)>,
    vio: i32,
}

/// One successor of a parent, as computed by `expand`.
struct Succ {
    leaf: u32,
    vio: i32,
    /// Budget slot spent (-1: none).
    bud_slot: i32,
    /// Already in the store when the block started (a duplicate for sure).
    dup: bool,
    /// Recoverability verdict from the tree (-1 fine, >= 0 a violation, -2 unknown).
    rec: i32,
    /// Index hash of the chunk ids.
    h: u64,
    /// Offset of the chunk ids in `Expansion::ids` when every chunk was known when
    /// the block started (NONE otherwise).
    ids: u32,
    /// Offset of the canonical key (model bytes + budgets) in `Expansion::keys` when
    /// the ids could not be formed; NONE when a value is past a byte (the Python
    /// canonicaliser's slow path).
    key: u32,
}

const NONE: u32 = u32::MAX;

/// The expansions of a run of parents, in flat buffers (no allocation per successor).
#[derive(Default)]
struct Expansion {
    /// Per parent: its range in `succs`, or None when a tree missed.
    spans: Vec<Option<(u32, u32)>>,
    succs: Vec<Succ>,
    ids: Vec<u32>,
    keys: Vec<u8>,
    /// The parents' keys, `key_len` bytes each.
    parents: Vec<u8>,
}

impl Expansion {
    fn clear(&mut self) {
        self.spans.clear();
        self.succs.clear();
        self.ids.clear();
        self.keys.clear();
        self.parents.clear();
    }
}

enum Miss {
    Enabled,
    Apply(u32),
}

struct Scratch {
    raw: Vec<i32>,
    rawb: Vec<u8>,
    key: Vec<u8>,
    canon: Vec<u8>,
    cand: Vec<u8>,
    ids: Vec<u32>,
}

impl Scratch {
    fn new() -> Self {
        Scratch { raw: Vec::new(), rawb: Vec::new(), key: Vec::new(), canon: Vec::new(),
                  cand: Vec::new(), ids: Vec::new() }
    }
}

#[pyclass(module = "kvmctx._native")]
struct Search {
    n: usize,
    canon: Canon,
    sched_kind: i32,
    cur: Vec<usize>,
    switch_slot: i32,
    slot_of: Vec<i32>,
    learner: Py<PyAny>,
    canon_key: Py<PyAny>,
    en_tree: Tree,
    en_leaves: Vec<Vec<u32>>,
    acts: Vec<Act>,
    act_ids: HashMap<Act, u32>,
    ap_trees: Vec<Tree>,
    ap_leaves: Vec<ApLeaf>,
    rec_tree: Tree,
    rec_leaves: Vec<i32>,
    store: Store,
    learned: [u64; 3],
    slow_canon: u64,
    /// Seconds in the expansion phase (worker threads) and in the ordered merge.
    t_expand: f64,
    t_merge: f64,
    /// Successors that reached the merge not known as duplicates, and new states.
    merged: u64,
}

fn rss_mb() -> f64 {
    let page = 4096.0;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|x| x.parse::<f64>().ok()))
        .map(|p| p * page / 1048576.0)
        .unwrap_or(0.0)
}

fn reads_of(ri: Vec<u32>, rv: Vec<i32>) -> Vec<(u32, i32)> {
    ri.into_iter().zip(rv).collect()
}

impl Search {
    #[inline]
    fn slot(&self, parent: &[u8], a: &Act) -> i32 {
        if a.0 == self.sched_kind {
            if parent[self.cur[a.1 as usize]] != 0 {
                self.switch_slot
            } else {
                -1
            }
        } else {
            *self.slot_of.get(a.0 as usize).unwrap_or(&-1)
        }
    }

    /// Every successor of `parent` from the trees alone, appended to `ex`, or the
    /// first miss (then `ex.succs` is left as it was).
    fn expand(&self, parent: &[u8], ex: &mut Expansion, sc: &mut Scratch) -> Result<(), Miss> {
        let n = self.n;
        let model = &parent[..n];
        let en = match self.en_tree.get(model) {
            Lookup::Hit(p) => p,
            Lookup::Miss => return Err(Miss::Enabled),
        };
        let start = ex.succs.len();
        for &aid in &self.en_leaves[en as usize] {
            let a = &self.acts[aid as usize];
            let slot = self.slot(parent, a);
            if slot >= 0 && parent[n + slot as usize] == 0 {
                continue;
            }
            let leaf = match self.ap_trees[aid as usize].get(model) {
                Lookup::Hit(p) => p,
                Lookup::Miss => {
                    ex.succs.truncate(start);
                    return Err(Miss::Apply(aid));
                }
            };
            let lf = &self.ap_leaves[leaf as usize];
            let mut su = Succ { leaf, vio: lf.vio, bud_slot: slot, dup: false, rec: -2, h: 0,
                                ids: NONE, key: NONE };
            if lf.vio >= 0 {
                ex.succs.push(su);
                return Ok(()); // the merge stops at the first violation
            }
            sc.rawb.clear();
            sc.rawb.extend_from_slice(model);
            let mut bytes_ok = true;
            for &(i, v) in &lf.writes {
                bytes_ok &= (0..=255).contains(&v);
                sc.rawb[i as usize] = v as u8;
            }
            if bytes_ok {
                self.canon.key(&sc.rawb, &mut sc.key, &mut sc.canon, &mut sc.cand);
                sc.key.extend_from_slice(&parent[n..]);
                if slot >= 0 {
                    sc.key[n + slot as usize] -= 1;
                }
                su.h = Store::hash(&sc.key);
                su.dup = self.store.contains_key(&sc.key, su.h);
                if !su.dup {
                    if self.store.compress_known(&sc.key, &mut sc.ids) {
                        su.ids = ex.ids.len() as u32;
                        ex.ids.extend_from_slice(&sc.ids);
                    } else {
                        su.key = ex.keys.len() as u32;
                        ex.keys.extend_from_slice(&sc.key);
                    }
                }
                if !su.dup {
                    if let Lookup::Hit(p) = self.rec_tree.get(&sc.rawb) {
                        su.rec = self.rec_leaves[p as usize];
                    }
                }
            }
            ex.succs.push(su);
        }
        Ok(())
    }

    /// Expand the parents `sids` into `ex` (one span per parent, None on a miss).
    fn expand_all(&self, sids: &[u32], ex: &mut Expansion) {
        ex.clear();
        let kl = self.store.key_len;
        let mut sc = Scratch::new();
        let mut buf = Vec::with_capacity(kl);
        for &sid in sids {
            self.store.decode(sid, &mut buf);
            ex.parents.extend_from_slice(&buf);
            let a = ex.succs.len() as u32;
            let span = match self.expand(&buf, ex, &mut sc) {
                Ok(()) => Some((a, ex.succs.len() as u32)),
                Err(_) => None,
            };
            ex.spans.push(span);
        }
    }

    fn learn_enabled(&mut self, py: Python<'_>, model: &[u8]) -> PyResult<()> {
        self.learned[0] += 1;
        let r = self.learner.bind(py).call_method1("enabled", (PyBytes::new_bound(py, model),))?;
        let (ri, rv, acts): (Vec<u32>, Vec<i32>, Vec<Act>) = r.extract()?;
        let mut ids = Vec::with_capacity(acts.len());
        for a in acts {
            let next = self.acts.len() as u32;
            let id = *self.act_ids.entry(a).or_insert(next);
            if id == next {
                self.acts.push(a);
                self.ap_trees.push(Tree::default());
            }
            ids.push(id);
        }
        let payload = self.en_leaves.len() as u32;
        self.en_leaves.push(ids);
        self.en_tree
            .add(&reads_of(ri, rv), payload)
            .map_err(|e| ImpureStep::new_err(format!("Model.enabled: {}", e.0)))
    }

    fn learn_apply(&mut self, py: Python<'_>, model: &[u8], aid: u32) -> PyResult<()> {
        self.learned[1] += 1;
        let a = self.acts[aid as usize];
        let r = self
            .learner
            .bind(py)
            .call_method1("apply", (PyBytes::new_bound(py, model), a))?;
        let (ri, rv, wi, wv, vio): (Vec<u32>, Vec<i32>, Vec<u32>, Vec<i32>, i32) = r.extract()?;
        let payload = self.ap_leaves.len() as u32;
        self.ap_leaves.push(ApLeaf { writes: wi.into_iter().zip(wv).collect(), vio });
        self.ap_trees[aid as usize].add(&reads_of(ri, rv), payload).map_err(|e| {
            ImpureStep::new_err(format!("Model.apply(action {a:?}): {}", e.0))
        })
    }

    fn recover(&mut self, py: Python<'_>, raw: &[i32]) -> PyResult<i32> {
        if let Lookup::Hit(p) = self.rec_tree.get(raw) {
            return Ok(self.rec_leaves[p as usize]);
        }
        self.learned[2] += 1;
        let r = self
            .learner
            .bind(py)
            .call_method1("recover", (PyList::new_bound(py, raw),))?;
        let (ri, rv, vio): (Vec<u32>, Vec<i32>, i32) = r.extract()?;
        let payload = self.rec_leaves.len() as u32;
        self.rec_leaves.push(vio);
        self.rec_tree
            .add(&reads_of(ri, rv), payload)
            .map_err(|e| ImpureStep::new_err(format!("Model.check_recoverable: {}", e.0)))?;
        Ok(vio)
    }

    /// `expand`, running the Python model on every miss until the trees answer.
    fn expand_learning(
        &mut self,
        py: Python<'_>,
        parent: &[u8],
        ex: &mut Expansion,
        sc: &mut Scratch,
    ) -> PyResult<()> {
        loop {
            match self.expand(parent, ex, sc) {
                Ok(()) => return Ok(()),
                Err(Miss::Enabled) => self.learn_enabled(py, &parent[..self.n])?,
                Err(Miss::Apply(aid)) => self.learn_apply(py, &parent[..self.n], aid)?,
            }
        }
    }

    fn raw_successor(&self, parent: &[u8], leaf: u32, raw: &mut Vec<i32>) {
        raw.clear();
        raw.extend(parent[..self.n].iter().map(|&x| x as i32));
        for &(i, v) in &self.ap_leaves[leaf as usize].writes {
            raw[i as usize] = v;
        }
    }
}

/// What `run` found, handed back to Python as a dict.
struct Outcome {
    transitions: u64,
    depth: u64,
    complete: bool,
    stop: String,
    vio: i32,
    vio_parent: i64,
    peak: f64,
}

impl Outcome {
    /// Stop at violation `vio` on a transition out of state `sid` (one level deeper).
    fn violated(&mut self, vio: i32, sid: u32) {
        self.vio = vio;
        self.vio_parent = sid as i64;
        self.depth += 1;
        self.complete = false;
        self.stop = "violation".into();
        self.peak = self.peak.max(rss_mb());
    }
}

#[pymethods]
impl Search {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        learner: Py<PyAny>,
        canon_key: Py<PyAny>,
        canon: &Bound<'_, PyDict>,
        budget_init: Vec<u8>,
        sched_kind: i32,
        cur: Vec<usize>,
        switch_slot: i32,
        slot_of: Vec<i32>,
    ) -> PyResult<Self> {
        let g = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            canon.get_item(k)?.ok_or_else(|| PyValueError::new_err(format!("canon table {k}")))
        };
        let mut relabels = Vec::new();
        for r in g("relabels")?.iter()? {
            let (src, slices, tagtab): (Vec<u32>, Vec<(usize, usize, Vec<u8>)>, Option<Vec<u8>>) =
                r?.extract()?;
            relabels.push(Relabel { src, slices, tagtab });
        }
        let c = Canon::new(
            g("size")?.extract()?,
            g("banks")?.extract()?,
            g("extra")?.extract()?,
            g("nctx")?.extract()?,
            g("nthreads_x")?.extract()?,
            g("tags_end")?.extract()?,
            (g("ver0")?.extract()?, g("ver1")?.extract()?, g("ver_const")?.extract()?),
            g("foreign0")?.extract()?,
            g("cur_idx")?.extract()?,
            g("nthreads")?.extract()?,
            g("rq_idle")?.extract()?,
            g("lo0")?.extract()?,
            g("owner_bits")?.extract()?,
            g("owner_mask")?.extract()?,
            relabels,
        );
        let n = c.size;
        let nb = budget_init.len();
        Ok(Search {
            n,
            canon: c,
            sched_kind,
            cur,
            switch_slot,
            slot_of,
            learner,
            canon_key,
            en_tree: Tree::default(),
            en_leaves: Vec::new(),
            acts: Vec::new(),
            act_ids: HashMap::new(),
            ap_trees: Vec::new(),
            ap_leaves: Vec::new(),
            rec_tree: Tree::default(),
            rec_leaves: Vec::new(),
            store: Store::new(n + nb),
            learned: [0; 3],
            slow_canon: 0,
            t_expand: 0.0,
            t_merge: 0.0,
            merged: 0,
        })
    }

    /// Canonical bytes of a raw model state (for the agreement tests).
    fn canonical(&self, py: Python<'_>, state: Vec<u8>) -> PyResult<Py<PyBytes>> {
        if state.len() != self.n {
            return Err(PyValueError::new_err("state length differs from the layout"));
        }
        let (mut out, mut sc, mut cand) = (Vec::new(), Vec::new(), Vec::new());
        self.canon.key(&state, &mut out, &mut sc, &mut cand);
        Ok(PyBytes::new_bound(py, &out).unbind())
    }

    /// Breadth-first search from `key0` (canonical initial key with budgets).
    #[pyo3(signature = (key0, max_depth=None, max_states=None, max_memory_mb=f64::INFINITY,
                        jobs=1, progress=None))]
    fn run(
        &mut self,
        py: Python<'_>,
        key0: Vec<u8>,
        max_depth: Option<u64>,
        max_states: Option<u64>,
        max_memory_mb: f64,
        jobs: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyDict>> {
        let o = self.search(py, key0, max_depth, max_states, max_memory_mb, jobs.max(1),
                            progress)?;
        let d = PyDict::new_bound(py);
        d.set_item("states", self.store.len())?;
        d.set_item("transitions", o.transitions)?;
        d.set_item("depth", o.depth)?;
        d.set_item("complete", o.complete)?;
        d.set_item("stop_reason", o.stop)?;
        d.set_item("violation", if o.vio >= 0 { Some(o.vio) } else { None })?;
        d.set_item("violation_parent", o.vio_parent)?;
        d.set_item("peak_rss_mb", o.peak)?;
        Ok(d.unbind())
    }

    /// Statistics of the learned trees and the store.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new_bound(py);
        d.set_item("python_enabled", self.learned[0])?;
        d.set_item("python_apply", self.learned[1])?;
        d.set_item("python_recover", self.learned[2])?;
        d.set_item("slow_canonical", self.slow_canon)?;
        d.set_item("expand_ms", (self.t_expand * 1e3) as u64)?;
        d.set_item("merge_ms", (self.t_merge * 1e3) as u64)?;
        d.set_item("merged_successors", self.merged)?;
        d.set_item("actions", self.acts.len())?;
        let nodes: usize = self.en_tree.len()
            + self.rec_tree.len()
            + self.ap_trees.iter().map(|t| t.len()).sum::<usize>();
        d.set_item("tree_nodes", nodes)?;
        d.set_item("store_bytes", self.store.bytes())?;
        d.set_item("chunks_per_state", self.store.nchunks)?;
        Ok(d.unbind())
    }

    /// Canonical keys from the initial state to state `sid`.
    fn chain(&self, py: Python<'_>, sid: u32) -> PyResult<Py<PyList>> {
        let mut keys = Vec::new();
        let mut i = sid;
        let mut buf = Vec::new();
        loop {
            self.store.decode(i, &mut buf);
            keys.push(PyBytes::new_bound(py, &buf));
            let p = self.store.parents[i as usize];
            if p == u32::MAX {
                break;
            }
            i = p;
        }
        keys.reverse();
        Ok(PyList::new_bound(py, keys).unbind())
    }
}

impl Search {
    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        py: Python<'_>,
        key0: Vec<u8>,
        max_depth: Option<u64>,
        max_states: Option<u64>,
        max_memory_mb: f64,
        jobs: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Outcome> {
        let mut ids0 = Vec::new();
        self.store.compress(&key0, &mut ids0);
        self.store.insert_new(&ids0, Store::hash(&key0), u32::MAX);
        let mut frontier: Vec<u32> = vec![0];
        let mut o = Outcome {
            transitions: 0,
            depth: 0,
            complete: true,
            stop: String::new(),
            vio: -1,
            vio_parent: -1,
            peak: rss_mb(),
        };
        let t0 = Instant::now();
        let mut last_report = t0;
        // Parents per block; with jobs > 1 a block is cut into PARTS_PER_JOB parts per
        // thread, handed out dynamically (the parts' costs differ).
        const PARTS_PER_JOB: usize = 8;
        let block = if jobs == 1 { 256 } else { 2048 * jobs };
        let mut sc = Scratch::new();
        let mut ids = Vec::new();
        let mut parent = Vec::new();
        let nparts = if jobs == 1 { 1 } else { PARTS_PER_JOB * jobs };
        let mut exs: Vec<Expansion> = (0..nparts).map(|_| Expansion::default()).collect();
        let mut learned = Expansion::default();
        let kl = self.store.key_len;
        'levels: while !frontier.is_empty() {
            if let Some(d) = max_depth {
                if o.depth >= d {
                    o.complete = false;
                    o.stop = format!("depth bound {d} reached");
                    break;
                }
            }
            let mut nxt: Vec<u32> = Vec::new();
            for blk in frontier.chunks(block) {
                // Phase 1: expand the block from the trees (on `jobs` threads).
                let tb = Instant::now();
                let per = blk.len().div_ceil(nparts).max(1);
                {
                    let this: &Search = self;
                    if jobs == 1 {
                        this.expand_all(blk, &mut exs[0]);
                    } else {
                        let work: Vec<std::sync::Mutex<(&[u32], &mut Expansion)>> = blk
                            .chunks(per)
                            .zip(exs.iter_mut())
                            .map(|(part, ex)| std::sync::Mutex::new((part, ex)))
                            .collect();
                        let next = std::sync::atomic::AtomicUsize::new(0);
                        py.allow_threads(|| {
                            std::thread::scope(|s| {
                                for _ in 0..jobs {
                                    s.spawn(|| loop {
                                        let i = next
                                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                        let Some(w) = work.get(i) else { break };
                                        let mut g = w.lock().unwrap();
                                        let (part, ex) = &mut *g;
                                        this.expand_all(part, ex);
                                    });
                                }
                            })
                        });
                    }
                }
                let tm = Instant::now();
                self.t_expand += tm.duration_since(tb).as_secs_f64();
                // Phase 2: merge in order; misses are expanded here, with the GIL.
                for (j, &sid) in blk.iter().enumerate() {
                    let ex = &exs[j / per];
                    let jj = j % per;
                    parent.clear();
                    parent.extend_from_slice(&ex.parents[jj * kl..(jj + 1) * kl]);
                    let (ex, a, z) = match ex.spans[jj] {
                        Some((a, z)) => (ex, a as usize, z as usize),
                        None => {
                            learned.clear();
                            self.expand_learning(py, &parent, &mut learned, &mut sc)?;
                            (&learned, 0, learned.succs.len())
                        }
                    };
                    for su in &ex.succs[a..z] {
                        o.transitions += 1;
                        if su.dup {
                            continue;
                        }
                        if su.vio >= 0 {
                            o.violated(su.vio, sid);
                            return Ok(o);
                        }
                        self.merged += 1;
                        let mut h = su.h;
                        if su.ids != NONE {
                            let i = su.ids as usize;
                            ids.clear();
                            ids.extend_from_slice(&ex.ids[i..i + self.store.nchunks]);
                        } else {
                            let key: Vec<u8> = if su.key != NONE {
                                let i = su.key as usize;
                                ex.keys[i..i + kl].to_vec()
                            } else {
                                // A value past a byte: the Python canonicaliser's slow path.
                                self.slow_canon += 1;
                                self.raw_successor(&parent, su.leaf, &mut sc.raw);
                                let mut key: Vec<u8> = self
                                    .canon_key
                                    .bind(py)
                                    .call1((PyList::new_bound(py, &sc.raw),))?
                                    .extract()?;
                                key.extend_from_slice(&parent[self.n..]);
                                if su.bud_slot >= 0 {
                                    key[self.n + su.bud_slot as usize] -= 1;
                                }
                                key
                            };
                            self.store.compress(&key, &mut ids);
                            h = Store::hash(&key);
                        }
                        if self.store.contains(&ids, h) {
                            continue;
                        }
                        // Recoverability is a property of the class: once per new state.
                        let mut rv = su.rec;
                        if rv == -2 {
                            self.raw_successor(&parent, su.leaf, &mut sc.raw);
                            let raw = std::mem::take(&mut sc.raw);
                            rv = self.recover(py, &raw)?;
                            sc.raw = raw;
                        }
                        if rv >= 0 {
                            o.violated(rv, sid);
                            return Ok(o);
                        }
                        let new = self.store.insert_new(&ids, h, sid);
                        nxt.push(new);
                    }
                    let nk = self.store.len() as u64;
                    if let Some(ms) = max_states {
                        if nk >= ms {
                            o.complete = false;
                            o.stop = format!("state limit {ms} reached");
                            break 'levels;
                        }
                    }
                    if nk & 0x3FFF == 0 {
                        let r = rss_mb();
                        o.peak = o.peak.max(r);
                        if r > max_memory_mb {
                            o.complete = false;
                            o.stop = format!("memory limit {max_memory_mb:.0} MB reached");
                            break 'levels;
                        }
                    }
                }
                self.t_merge += tm.elapsed().as_secs_f64();
                py.check_signals()?;
                if let Some(p) = &progress {
                    let now = Instant::now();
                    if now.duration_since(last_report).as_secs_f64() > 0.25 {
                        last_report = now;
                        p.call1(py, (self.store.len(), o.transitions, o.depth))?;
                    }
                }
            }
            frontier = nxt;
            if !frontier.is_empty() {
                o.depth += 1;
            }
        }
        o.peak = o.peak.max(rss_mb());
        if let Some(p) = &progress {
            p.call1(py, (self.store.len(), o.transitions, o.depth))?;
        }
        Ok(o)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Search>()?;
    m.add("ImpureStep", m.py().get_type_bound::<ImpureStep>())?;
    let _ = PyTuple::empty_bound(m.py());
    Ok(())
}
