//! Keys of any supported type (int64, string, composite) -> dense slots.
//!
//! A [`KeyDict`] maps each distinct key of the indexed side to a slot
//! `0..len`. It is exact: a single int64 key is its own value (when the ids
//! are dense its slot is the id less the smallest, and `len` counts the ids
//! between them that have no rows; a hash map otherwise), and any other
//! key is encoded to bytes without loss (a type tag, then the int's 8 bytes
//! or the string's length and bytes, per part), so two distinct keys never
//! share a slot. A key with a null part has no slot, on either side.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::{DataFusionError, Result};
use hashbrown::HashMap;

/// Key columns of one batch, ready to encode row by row.
pub(super) enum KeyColumns<'a> {
    /// One int64 column.
    Int(&'a datafusion::arrow::array::Int64Array),
    /// Anything else: encoded to bytes.
    Bytes(Vec<&'a ArrayRef>),
}

impl<'a> KeyColumns<'a> {
    pub fn new(columns: Vec<&'a ArrayRef>) -> Result<Self> {
        for c in &columns {
            if !matches!(c.data_type(), DataType::Int64 | DataType::Utf8) {
                return Err(DataFusionError::Plan(format!(
                    "a key column is {}, not int64 or string",
                    c.data_type()
                )));
            }
        }
        Ok(match columns.as_slice() {
            [one] if one.data_type() == &DataType::Int64 => {
                KeyColumns::Int(one.as_primitive::<Int64Type>())
            }
            _ => KeyColumns::Bytes(columns),
        })
    }

    /// Writes row `row`'s key into `buf` (bytes keys); `false` when a part
    /// is null.
    fn encode(&self, row: usize, buf: &mut Vec<u8>) -> bool {
        let KeyColumns::Bytes(columns) = self else {
            return false;
        };
        buf.clear();
        for c in columns {
            if c.is_null(row) {
                return false;
            }
            match c.data_type() {
                DataType::Int64 => {
                    buf.push(0);
                    buf.extend_from_slice(&c.as_primitive::<Int64Type>().value(row).to_le_bytes());
                }
                _ => {
                    let s = c.as_string::<i32>().value(row).as_bytes();
                    buf.push(1);
                    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    buf.extend_from_slice(s);
                }
            }
        }
        true
    }
}

/// Distinct keys -> slots.
#[derive(Debug, Default)]
pub(super) struct KeyDict {
    ints: HashMap<i64, u32>,
    bytes: HashMap<Box<[u8]>, u32>,
    /// When the int keys are dense: `min`, and a key's slot is `key - min`
    /// (an id in the span that has no rows has an empty slot).
    dense: Option<i64>,
    len: usize,
}

impl KeyDict {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The slot of each row's key, inserting new keys; `None` for a null part.
    pub fn insert_all(&mut self, keys: &KeyColumns<'_>, rows: usize, out: &mut Vec<Option<u32>>) {
        let mut buf = Vec::new();
        for row in 0..rows {
            let slot = match keys {
                KeyColumns::Int(a) => (!a.is_null(row)).then(|| {
                    let next = self.len as u32;
                    let slot = *self.ints.entry(a.value(row)).or_insert(next);
                    if slot == next {
                        self.len += 1;
                    }
                    slot
                }),
                KeyColumns::Bytes(_) => keys.encode(row, &mut buf).then(|| {
                    let next = self.len as u32;
                    let slot = match self.bytes.get(buf.as_slice()) {
                        Some(&s) => s,
                        None => {
                            self.bytes.insert(buf.clone().into_boxed_slice(), next);
                            next
                        }
                    };
                    if slot == next {
                        self.len += 1;
                    }
                    slot
                }),
            };
            out.push(slot);
        }
    }

    /// Switches int keys to dense slots when they span little more than
    /// their number (ids usually do): a key's slot is then `key - min`, with
    /// no table to read (a table from key to slot was one more cache miss
    /// per spine row and index once the keys outgrow the cache). Returns
    /// the new slot of each slot `insert_all` gave, when they changed.
    #[must_use]
    pub fn finish(&mut self) -> Option<Vec<u32>> {
        let (Some(min), Some(max)) = (self.ints.keys().min(), self.ints.keys().max()) else {
            return None;
        };
        let span = max
            .checked_sub(*min)
            .and_then(|s| usize::try_from(s).ok())?;
        if span >= 4 * self.ints.len() + 1024 || span >= u32::MAX as usize - 1 {
            return None;
        }
        let mut renumbered = vec![0u32; self.len];
        for (&k, &slot) in &self.ints {
            renumbered[slot as usize] = (k - min) as u32;
        }
        self.dense = Some(*min);
        self.len = span + 1;
        self.ints = HashMap::new();
        Some(renumbered)
    }

    /// The slot of each row's key; `None` for an unknown key or a null part.
    pub fn lookup_all(&self, keys: &KeyColumns<'_>, rows: usize, out: &mut Vec<Option<u32>>) {
        out.clear();
        match keys {
            KeyColumns::Int(a) => {
                // Straight over the values: this runs once per spine row and index.
                let values = &a.values()[..rows];
                match a.nulls() {
                    None => out.extend(values.iter().map(|&k| self.int_slot(k))),
                    Some(nulls) => {
                        out.extend(values.iter().enumerate().map(|(row, &k)| {
                            nulls.is_valid(row).then(|| self.int_slot(k)).flatten()
                        }))
                    }
                }
            }
            KeyColumns::Bytes(_) => {
                let mut buf = Vec::new();
                out.extend((0..rows).map(|row| {
                    keys.encode(row, &mut buf)
                        .then(|| self.bytes.get(buf.as_slice()).copied())
                        .flatten()
                }));
            }
        }
    }

    fn int_slot(&self, key: i64) -> Option<u32> {
        match self.dense {
            Some(min) => {
                let i = u32::try_from(key.checked_sub(min)?).ok()?;
                ((i as usize) < self.len).then_some(i)
            }
            None => self.ints.get(&key).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn composite_keys_never_collide_and_nulls_have_no_slot() {
        // ("a", 1) and ("a\0\0...", ...) style collisions are impossible: the
        // string's length is part of the encoding.
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("ab"),
            Some("a"),
            None,
            Some("ab"),
        ]));
        let i: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(1), None]));
        let keys = KeyColumns::new(vec![&s, &i]).unwrap();
        let mut dict = KeyDict::default();
        let mut slots = Vec::new();
        dict.insert_all(&keys, 4, &mut slots);
        assert_eq!(slots, vec![Some(0), Some(1), None, None]);
        let mut found = Vec::new();
        dict.lookup_all(&keys, 4, &mut found);
        assert_eq!(found, slots);
    }

    #[test]
    fn string_parts_are_delimited_by_their_length() {
        // With only a tag byte (1) before each part, ("a\u{1}b", "c") and
        // ("a", "b\u{1}c") would encode to the same bytes.
        let a: ArrayRef = Arc::new(StringArray::from(vec!["a\u{1}b", "a"]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["c", "b\u{1}c"]));
        let keys = KeyColumns::new(vec![&a, &b]).unwrap();
        let mut dict = KeyDict::default();
        let mut slots = Vec::new();
        dict.insert_all(&keys, 2, &mut slots);
        assert_eq!(slots, vec![Some(0), Some(1)]);
    }

    #[test]
    fn dense_and_sparse_int_keys() {
        for values in [vec![5, 9, 5, 6], vec![i64::MIN, i64::MAX, 0, i64::MIN]] {
            let a: ArrayRef = Arc::new(Int64Array::from(values.clone()));
            let keys = KeyColumns::new(vec![&a]).unwrap();
            let mut dict = KeyDict::default();
            let mut slots = Vec::new();
            dict.insert_all(&keys, 4, &mut slots);
            if let Some(renumbered) = dict.finish() {
                for slot in slots.iter_mut().flatten() {
                    *slot = renumbered[*slot as usize];
                }
            }
            let mut found = Vec::new();
            dict.lookup_all(&keys, 4, &mut found);
            assert_eq!(found, slots);
            assert_eq!(
                found[0],
                found[3].filter(|_| values[0] == values[3]).or(found[0])
            );
            let other: ArrayRef = Arc::new(Int64Array::from(vec![4, 10, -1]));
            dict.lookup_all(&KeyColumns::new(vec![&other]).unwrap(), 3, &mut found);
            assert_eq!(found, vec![None, None, None]);
        }
        // Dense ids are their own slots, less the smallest; an id between
        // them without rows has a slot of its own (an empty run).
        let a: ArrayRef = Arc::new(Int64Array::from(vec![5, 9, 5, 6]));
        let keys = KeyColumns::new(vec![&a]).unwrap();
        let mut dict = KeyDict::default();
        let mut slots = Vec::new();
        dict.insert_all(&keys, 4, &mut slots);
        assert_eq!(dict.finish(), Some(vec![0, 4, 1]));
        assert_eq!(dict.len(), 5);
        let gap: ArrayRef = Arc::new(Int64Array::from(vec![7, 9]));
        let mut found = Vec::new();
        dict.lookup_all(&KeyColumns::new(vec![&gap]).unwrap(), 2, &mut found);
        assert_eq!(found, vec![Some(2), Some(4)]);
    }
}
