//! Decision trees over first reads, learned from the Python model.
//!
//! A tree answers "what does this step do in state s" by reading the fields
//! the Python step read, in the order it read them, and branching on their
//! values; a leaf holds the outcome (an index into the caller's payloads).
//! Only the Python model adds paths (see kvmctx/engines/learn.py); a path
//! that disagrees with the tree where they overlap means the step looked at
//! something outside the state, and is refused.
//!
//! Layout: one flat vector of 32-byte nodes, the first three children inline
//! (most nodes have one or two), the rest in an overflow list. A fresh path
//! is appended as consecutive nodes, so a walk mostly reads memory in order.

const LEAF: u32 = u32::MAX;
const INLINE: usize = 3;

#[derive(Clone, Copy)]
struct Node {
    /// Field read here, or LEAF (then `kid[0]` is the payload).
    idx: u32,
    nkids: u32,
    val: [i32; INLINE],
    kid: [u32; INLINE],
    /// Index into `more` for children past the inline ones (u32::MAX: none).
    more: u32,
}

#[derive(Default)]
pub struct Tree {
    nodes: Vec<Node>,
    more: Vec<Vec<(i32, u32)>>,
}

pub enum Lookup {
    Hit(u32),
    Miss,
}

#[derive(Debug)]
pub struct Impure(pub String);

impl Tree {
    #[inline]
    pub fn get<T: Copy + Into<i32>>(&self, s: &[T]) -> Lookup {
        if self.nodes.is_empty() {
            return Lookup::Miss;
        }
        let mut n = 0usize;
        loop {
            let node = &self.nodes[n];
            if node.idx == LEAF {
                return Lookup::Hit(node.kid[0]);
            }
            let v: i32 = s[node.idx as usize].into();
            match self.find(node, v) {
                Some(c) => n = c as usize,
                None => return Lookup::Miss,
            }
        }
    }

    #[inline]
    fn find(&self, node: &Node, v: i32) -> Option<u32> {
        let k = (node.nkids as usize).min(INLINE);
        for j in 0..k {
            if node.val[j] == v {
                return Some(node.kid[j]);
            }
        }
        if node.more != u32::MAX {
            let m = &self.more[node.more as usize];
            return m.binary_search_by_key(&v, |&(x, _)| x).ok().map(|p| m[p].1);
        }
        None
    }

    fn push_kid(&mut self, n: usize, v: i32, kid: u32) {
        let node = &mut self.nodes[n];
        let k = node.nkids as usize;
        node.nkids += 1;
        if k < INLINE {
            node.val[k] = v;
            node.kid[k] = kid;
            return;
        }
        if node.more == u32::MAX {
            node.more = self.more.len() as u32;
            self.more.push(Vec::new());
        }
        let m = &mut self.more[node.more as usize];
        let pos = m.partition_point(|&(x, _)| x < v);
        m.insert(pos, (v, kid));
    }

    /// Add a recorded path (first reads in order, with values) ending at `payload`.
    pub fn add(&mut self, reads: &[(u32, i32)], payload: u32) -> Result<(), Impure> {
        if self.nodes.is_empty() {
            self.chain(reads, payload);
            return Ok(());
        }
        let mut n = 0usize;
        for (j, &(i, v)) in reads.iter().enumerate() {
            let node = self.nodes[n];
            if node.idx == LEAF {
                return Err(Impure(format!(
                    "the step read field {i} where an earlier run with the same values had \
                     finished"
                )));
            }
            if node.idx != i {
                return Err(Impure(format!(
                    "the step read field {i} where an earlier run with the same values read \
                     field {}",
                    node.idx
                )));
            }
            match self.find(&node, v) {
                Some(c) => n = c as usize,
                None => {
                    let next = self.nodes.len() as u32;
                    self.push_kid(n, v, next);
                    self.chain(&reads[j + 1..], payload);
                    return Ok(());
                }
            }
        }
        Err(Impure("the step finished where an earlier run with the same values read on".into()))
    }

    /// Append the nodes of a fresh path; its first node gets the next free index.
    fn chain(&mut self, reads: &[(u32, i32)], payload: u32) {
        let base = self.nodes.len() as u32;
        for (j, &(i, v)) in reads.iter().enumerate() {
            self.nodes.push(Node {
                idx: i,
                nkids: 1,
                val: [v, 0, 0],
                kid: [base + j as u32 + 1, 0, 0],
                more: u32::MAX,
            });
        }
        self.nodes.push(Node { idx: LEAF, nkids: 0, val: [0; 3], kid: [payload, 0, 0],
                               more: u32::MAX });
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}
