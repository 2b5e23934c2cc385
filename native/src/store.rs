//! The visited set: exact states, compressed by interning 16-byte chunks.
//!
//! A checker state (canonical model bytes + remaining budgets) is cut into
//! 16-byte chunks; each distinct chunk gets a u32 id, and a state is stored
//! as its vector of chunk ids. Few distinct chunks exist (a chunk covers a
//! handful of fields, whose joint values repeat across millions of states),
//! so a 150-byte state takes 40 bytes plus its slot in the index. State ids
//! are dense and assigned in insertion order.

use hashbrown::{HashMap, HashTable};

pub const CHUNK: usize = 16;

pub struct Store {
    pub key_len: usize,
    pub nchunks: usize,
    chunk_ids: HashMap<u128, u32>,
    chunks: Vec<u128>,
    pages: Vec<Vec<u32>>, // PAGE states' chunk ids each: no reallocation spikes
    /// (state id, 32 bits of its hash): rehashing never reads the pages back.
    index: HashTable<(u32, u32)>,
    pub parents: Vec<u32>,
}

const PAGE: usize = 1 << 16;

#[inline]
fn ids_of(pages: &[Vec<u32>], n: usize, sid: u32) -> &[u32] {
    let s = sid as usize;
    let a = (s % PAGE) * n;
    &pages[s / PAGE][a..a + n]
}

#[inline]
fn chunk_at(key: &[u8], c: usize) -> u128 {
    let mut buf = [0u8; CHUNK];
    let a = c * CHUNK;
    let z = (a + CHUNK).min(key.len());
    buf[..z - a].copy_from_slice(&key[a..z]);
    u128::from_le_bytes(buf)
}

#[inline]
fn same(a: &[u32], b: &[u32]) -> bool {
    // An explicit loop: a slice `==` of this length is a call to memcmp.
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The table's 64-bit hash from the 32 bits kept per entry (hashbrown takes its
/// bucket from the low bits and its tag from the top 7).
#[inline]
fn spread(h32: u32) -> u64 {
    (h32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}


impl Store {
    pub fn new(key_len: usize) -> Self {
        Store {
            key_len,
            nchunks: key_len.div_ceil(CHUNK),
            chunk_ids: HashMap::new(),
            chunks: Vec::new(),
            pages: Vec::new(),
            index: HashTable::new(),
            parents: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// Chunk ids of a key from the chunks known so far (read-only); false if a
    /// chunk is new (the caller then interns it with `compress`).
    pub fn compress_known(&self, key: &[u8], out: &mut Vec<u32>) -> bool {
        out.clear();
        for c in 0..self.nchunks {
            match self.chunk_ids.get(&chunk_at(key, c)) {
                Some(&id) => out.push(id),
                None => return false,
            }
        }
        true
    }

    pub fn compress(&mut self, key: &[u8], out: &mut Vec<u32>) {
        out.clear();
        for c in 0..self.nchunks {
            let ch = chunk_at(key, c);
            let next = self.chunks.len() as u32;
            let id = *self.chunk_ids.entry(ch).or_insert(next);
            if id == next {
                self.chunks.push(ch);
            }
            out.push(id);
        }
    }

    #[inline]
    fn state_ids(&self, sid: u32) -> &[u32] {
        ids_of(&self.pages, self.nchunks, sid)
    }

    /// The index hash of a state, from its key bytes (for `contains*`, `insert_new`).
    #[inline]
    pub fn hash(key: &[u8]) -> u64 {
        let mut h: u64 = 0x243F_6A88_85A3_08D3;
        let mut words = key.chunks_exact(8);
        for w in &mut words {
            let x = u64::from_le_bytes(w.try_into().unwrap());
            h = (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        }
        for &b in words.remainder() {
            h = (h ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        }
        h ^= h >> 32;
        h.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (h >> 29)
    }

    /// Is the state with these key bytes stored? (No chunk lookups: the stored
    /// candidates are decoded through the chunk table and compared.)
    pub fn contains_key(&self, key: &[u8], h: u64) -> bool {
        let h32 = h as u32;
        self.index
            .find(spread(h32), |&(s, x)| {
                x == h32
                    && self
                        .state_ids(s)
                        .iter()
                        .enumerate()
                        .all(|(c, &id)| self.chunks[id as usize] == chunk_at(key, c))
            })
            .is_some()
    }

    pub fn contains(&self, ids: &[u32], h: u64) -> bool {
        let h32 = h as u32;
        self.index
            .find(spread(h32), |&(s, x)| x == h32 && same(self.state_ids(s), ids))
            .is_some()
    }

    /// Insert a state known to be new (`h` = `Store::hash(ids)`); returns its id.
    pub fn insert_new(&mut self, ids: &[u32], h: u64, parent: u32) -> u32 {
        let sid = self.parents.len() as u32;
        if sid as usize % PAGE == 0 {
            self.pages.push(Vec::with_capacity(PAGE * self.nchunks));
        }
        self.pages.last_mut().unwrap().extend_from_slice(ids);
        self.parents.push(parent);
        self.index.insert_unique(spread(h as u32), (sid, h as u32), |&(_, x)| spread(x));
        sid
    }

    pub fn decode(&self, sid: u32, out: &mut Vec<u8>) {
        out.clear();
        for &id in self.state_ids(sid) {
            out.extend_from_slice(&self.chunks[id as usize].to_le_bytes());
        }
        out.truncate(self.key_len);
    }

    /// Bytes held per state by the store's own structures (for the summary).
    pub fn bytes(&self) -> usize {
        self.pages.iter().map(|p| p.capacity() * 4).sum::<usize>()
            + self.parents.capacity() * 4
            + self.index.capacity() * 9
            + self.chunks.capacity() * 16
            + self.chunk_ids.capacity() * 24
    }
}
