//! Canonical bytes of a state: the same function as kvmctx/engines/canon.py
//! (`Canon.key_bytes`), driven by the tables that class computes from the
//! layout. Why each reduction is sound is argued there; this is its hot loop.

pub struct Relabel {
    pub src: Vec<u32>,
    pub slices: Vec<(usize, usize, Vec<u8>)>,
    pub tagtab: Option<Vec<u8>>,
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
    pub relabels: Vec<Relabel>,
    pub owner_bits: u32,
    pub owner_mask: u8,
    /// Stale-by-default translation: a tag of any version maps to version 0.
    pub base: [u8; 256],
}

impl Canon {
    pub fn base_table(owner_mask: u8) -> [u8; 256] {
        let mut base = [0u8; 256];
        for (x, slot) in base.iter_mut().enumerate() {
            let x = x as u8;
            *slot = if x > owner_mask { x & owner_mask } else { x };
        }
        base
    }

    fn tables(&self, b: &[u8], out: &mut Vec<[u8; 256]>) {
        let om = self.owner_mask;
        let n = self.nctx;
        let nt = self.nthreads_x;
        out.clear();
        for (i, &(_a, _z, w)) in self.banks.iter().enumerate() {
            let mut tab = self.base;
            let e = self.extra[i];
            if e >= 0 {
                let e = e as usize;
                for &x in &b[e..e + nt] {
                    if x > om {
                        tab[x as usize] = (2u8 << self.owner_bits) | (x & om);
                    }
                }
            }
            for &x in &b[w..w + n] {
                if x > om {
                    tab[x as usize] = (1u8 << self.owner_bits) | (x & om);
                }
            }
            out.push(tab);
        }
    }

    /// Canonical bytes of the model state `b` (len == size), written to `out`.
    pub fn key(&self, b: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>,
               tabs: &mut Vec<[u8; 256]>) {
        self.tables(b, tabs);
        out.clear();
        for (&(a, z, _w), tab) in self.banks.iter().zip(tabs.iter()) {
            out.extend(b[a..z].iter().map(|&x| tab[x as usize]));
        }
        out.extend_from_slice(&b[self.tags_end..]);
        out[self.ver0..self.ver1].copy_from_slice(&self.ver_const);
        for t in 1..self.nthreads {
            let running = self.cur_idx.iter().any(|&i| out[i] as usize == t);
            if !running {
                out[self.foreign0 + t] = 1;
            }
        }
        if self.relabels.is_empty() {
            return;
        }
        // `out` is the base; each relabelling is compared against the best so far.
        let mut best: Option<Vec<u8>> = None;
        for r in &self.relabels {
            scratch.clear();
            scratch.extend(r.src.iter().map(|&j| out[j as usize]));
            for (a, z, tab) in &r.slices {
                for x in &mut scratch[*a..*z] {
                    *x = tab[*x as usize];
                }
            }
            scratch[self.rq_idle] = 0;
            if let Some(tt) = &r.tagtab {
                for x in &mut scratch[self.lo0..self.tags_end] {
                    *x = tt[*x as usize];
                }
            }
            let cur_best: &[u8] = best.as_deref().unwrap_or(out);
            if scratch.as_slice() < cur_best {
                match &mut best {
                    Some(bv) => bv.copy_from_slice(scratch),
                    None => best = Some(scratch.clone()),
                }
            }
        }
        if let Some(bv) = best {
            out.copy_from_slice(&bv);
        }
    }
}
