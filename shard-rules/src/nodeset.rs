//! A set of data node indices: a bit set, inline for tables of up to 128 nodes (set operations
//! do not allocate), on the heap beyond.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeSet {
    Small(u128),
    Large(Vec<u64>),
}

impl NodeSet {
    pub(crate) fn empty(nodes: usize) -> NodeSet {
        if nodes <= 128 {
            NodeSet::Small(0)
        } else {
            NodeSet::Large(vec![0; nodes.div_ceil(64)])
        }
    }

    pub(crate) fn full(nodes: usize) -> NodeSet {
        let mut s = NodeSet::empty(nodes);
        match &mut s {
            NodeSet::Small(b) => {
                *b = if nodes == 128 {
                    u128::MAX
                } else {
                    (1u128 << nodes) - 1
                }
            }
            NodeSet::Large(w) => {
                for i in 0..nodes {
                    w[i / 64] |= 1 << (i % 64);
                }
            }
        }
        s
    }

    pub(crate) fn insert(&mut self, i: usize) {
        match self {
            NodeSet::Small(b) => *b |= 1 << i,
            NodeSet::Large(w) => w[i / 64] |= 1 << (i % 64),
        }
    }

    pub(crate) fn intersect(&mut self, other: &NodeSet) {
        match (self, other) {
            (NodeSet::Small(a), NodeSet::Small(b)) => *a &= b,
            (NodeSet::Large(a), NodeSet::Large(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x &= y;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn union(&mut self, other: &NodeSet) {
        match (self, other) {
            (NodeSet::Small(a), NodeSet::Small(b)) => *a |= b,
            (NodeSet::Large(a), NodeSet::Large(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x |= y;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            NodeSet::Small(b) => b.count_ones() as usize,
            NodeSet::Large(w) => w.iter().map(|x| x.count_ones() as usize).sum(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let words: Vec<(usize, u64)> = match self {
            NodeSet::Small(b) => vec![(0, *b as u64), (64, (*b >> 64) as u64)],
            NodeSet::Large(w) => w.iter().enumerate().map(|(i, x)| (i * 64, *x)).collect(),
        };
        words.into_iter().flat_map(|(base, mut word)| {
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let t = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(base + t)
            })
        })
    }

    pub(crate) fn first(&self) -> Option<usize> {
        self.iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_sets_agree() {
        for n in [1usize, 8, 64, 65, 128, 129, 300] {
            let mut a = NodeSet::empty(n);
            let mut b = NodeSet::full(n);
            assert_eq!(b.len(), n);
            for i in (0..n).step_by(3) {
                a.insert(i);
            }
            b.intersect(&a);
            assert_eq!(
                b.iter().collect::<Vec<_>>(),
                (0..n).step_by(3).collect::<Vec<_>>()
            );
            let mut c = NodeSet::empty(n);
            c.insert(n - 1);
            c.union(&a);
            assert_eq!(c.len(), a.len() + usize::from((n - 1) % 3 != 0));
            assert_eq!(c.first(), Some(0));
        }
    }
}
