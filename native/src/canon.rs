//! Canonical bytes of a state: the same function as kvmctx/engines/canon.py
//! (`Canon.key_bytes`), driven by the tables that class computes from the
//! layout. Why each reduction is sound is argued there; this is its hot loop.
//!
//! Two things differ in how, not in what:
//! - a bank's version renumbering tests membership in 256-bit sets of the
//!   bank's latest values (and second references) instead of building a
//!   256-byte table per state;
//! - each relabelling is compiled to one table per position (the slice tables,
//!   the zeroed idle runqueue and the tag table composed in canon.py's order),
//!   and a candidate is abandoned at its first byte above the best so far.

pub struct Relabel {
    pub src: Vec<u32>,
    pub slices: Vec<(usize, usize, Vec<u8>)>,
    pub tagtab: Option<Vec<u8>>,
}

/// A relabelling compiled for the hot loop: out[j] = tabs[tab_of[j]][base[src[j]]].
struct Compiled {
    src: Vec<u32>,
    tab_of: Vec<u16>,
    tabs: Vec<[u8; 256]>,
}

pub struct Canon {
    pub size: usize,
    pub banks: Vec<(usize, usize, usize)>,
    pub extra: Vec<i64>,
    pub nctx: usize,
    pub nthreads_x: usize,
    pub tags_end: usize,
    pub ver0: usize,
    pub ver1: usize,
    pub ver_const: Vec<u8>,
    pub foreign0: usize,
    pub cur_idx: Vec<usize>,
    pub nthreads: usize,
    pub rq_idle: usize,
    pub lo0: usize,
    pub owner_bits: u32,
    pub owner_mask: u8,
    compiled: Vec<Compiled>,
}

#[inline]
fn has(set: &[u64; 4], x: u8) -> bool {
    set[(x >> 6) as usize] >> (x & 63) & 1 != 0
}

#[inline]
fn add(set: &mut [u64; 4], x: u8) {
    set[(x >> 6) as usize] |= 1 << (x & 63);
}

impl Canon {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: usize,
        banks: Vec<(usize, usize, usize)>,
        extra: Vec<i64>,
        nctx: usize,
        nthreads_x: usize,
        tags_end: usize,
        ver: (usize, usize, Vec<u8>),
        foreign0: usize,
        cur_idx: Vec<usize>,
        nthreads: usize,
        rq_idle: usize,
        lo0: usize,
        owner_bits: u32,
        owner_mask: u8,
        relabels: Vec<Relabel>,
    ) -> Self {
        let compiled = relabels.iter().map(|r| compile(r, size, rq_idle, lo0, tags_end)).collect();
        Canon {
            size,
            banks,
            extra,
            nctx,
            nthreads_x,
            tags_end,
            ver0: ver.0,
            ver1: ver.1,
            ver_const: ver.2,
            foreign0,
            cur_idx,
            nthreads,
            rq_idle,
            lo0,
            owner_bits,
            owner_mask,
            compiled,
        }
    }

    /// Canonical bytes of the model state `b` (len == size), written to `out`.
    pub fn key(&self, b: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>, cand: &mut Vec<u8>) {
        let om = self.owner_mask;
        let latest = 1u8 << self.owner_bits;
        let second = 2u8 << self.owner_bits;
        let (n, nt) = (self.nctx, self.nthreads_x);
        out.clear();
        for (i, &(a, z, w)) in self.banks.iter().enumerate() {
            // A tag that is its owner's latest value -> version 1, a second
            // reference -> version 2, any other versioned tag -> version 0.
            let mut lat = [0u64; 4];
            for &x in &b[w..w + n] {
                if x > om {
                    add(&mut lat, x);
                }
            }
            let mut sec = [0u64; 4];
            let e = self.extra[i];
            if e >= 0 {
                for &x in &b[e as usize..e as usize + nt] {
                    if x > om {
                        add(&mut sec, x);
                    }
                }
            }
            out.extend(b[a..z].iter().map(|&x| {
                if x <= om {
                    x
                } else if has(&lat, x) {
                    latest | (x & om)
                } else if has(&sec, x) {
                    second | (x & om)
                } else {
                    x & om
                }
            }));
        }
        out.extend_from_slice(&b[self.tags_end..]);
        out[self.ver0..self.ver1].copy_from_slice(&self.ver_const);
        for t in 1..self.nthreads {
            if !self.cur_idx.iter().any(|&i| out[i] as usize == t) {
                out[self.foreign0 + t] = 1;
            }
        }
        if self.compiled.is_empty() {
            return;
        }
        // `out` is the base; the best relabelling found so far goes to `scratch`.
        let mut have_best = false;
        cand.resize(self.size, 0);
        for c in &self.compiled {
            let best: &[u8] = if have_best { scratch } else { out };
            let mut j = 0;
            let mut lower = false;
            while j < self.size {
                let v = c.tabs[c.tab_of[j] as usize][out[c.src[j] as usize] as usize];
                cand[j] = v;
                j += 1;
                if v != best[j - 1] {
                    lower = v < best[j - 1];
                    break;
                }
            }
            if !lower {
                continue; // equal or above: the best stands
            }
            while j < self.size {
                cand[j] = c.tabs[c.tab_of[j] as usize][out[c.src[j] as usize] as usize];
                j += 1;
            }
            scratch.clear();
            scratch.extend_from_slice(cand);
            have_best = true;
        }
        if have_best {
            out.copy_from_slice(scratch);
        }
    }
}

/// One table per position, composed in canon.py's order: the slice tables, then
/// the idle thread's runqueue set to 0, then the tag table over [lo0, tags_end).
fn compile(r: &Relabel, size: usize, rq_idle: usize, lo0: usize, tags_end: usize) -> Compiled {
    let ident: [u8; 256] = std::array::from_fn(|x| x as u8);
    let mut tabs: Vec<[u8; 256]> = vec![ident];
    let mut tab_of = Vec::with_capacity(size);
    for j in 0..size {
        let mut t = ident;
        for (a, z, tab) in &r.slices {
            if (*a..*z).contains(&j) {
                t = std::array::from_fn(|x| tab[t[x] as usize]);
            }
        }
        if j == rq_idle {
            t = [0u8; 256];
        }
        if let Some(tt) = &r.tagtab {
            if (lo0..tags_end).contains(&j) {
                t = std::array::from_fn(|x| tt[t[x] as usize]);
            }
        }
        let id = match tabs.iter().position(|x| *x == t) {
            Some(i) => i,
            None => {
                tabs.push(t);
                tabs.len() - 1
            }
        };
        tab_of.push(id as u16);
    }
    Compiled { src: r.src.clone(), tab_of, tabs }
}
