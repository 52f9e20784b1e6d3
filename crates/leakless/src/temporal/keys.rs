//! Keys (int64, string, composite) -> dense slots.
//!
//! [`Symbols`] first gives every string key value of the indexed side one
//! id, shared by all indexes, so that a [`KeyDict`] only ever sees ints.
//! A [`KeyDict`] maps each distinct key of an index to a slot `0..len`, in
//! order of first appearance. It is exact: two distinct keys never share a
//! slot.
//! - A single int64 key is its own value: when the ids are dense its slot
//!   is the id less the smallest (and `len` counts the ids between them
//!   that have no rows), a hash map otherwise.
//! - A composite key is the tuple of its parts as 64-bit words, interned:
//!   a key of a user and an item costs two words and a table entry,
//!   however long the user's name, and is hashed and compared as two
//!   words.
//!
//! A key with a null part has no slot, on either side.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::hash::BuildHasher;
use std::sync::Arc;

/// A row without a slot (a null key part) in [`KeyDict::insert_all`]'s output.
pub(super) const NO_SLOT: u32 = u32::MAX;

/// Key columns of one batch, ready to map row by row: int64 columns (a
/// string key's ids from [`Symbols`]).
pub(super) struct KeyColumns<'a> {
    parts: Vec<&'a Int64Array>,
}

impl<'a> KeyColumns<'a> {
    pub fn new(columns: Vec<&'a ArrayRef>) -> Result<Self> {
        let parts = columns
            .into_iter()
            .map(|c| match c.data_type() {
                DataType::Int64 => Ok(c.as_primitive()),
                other => Err(DataFusionError::Plan(format!(
                    "a key column is {other}, not int64 (string keys are mapped to ids first)"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        if parts.is_empty() {
            return Err(DataFusionError::Plan("a key without columns".into()));
        }
        Ok(KeyColumns { parts })
    }
}

/// Byte strings -> ids `0..len` in order of first appearance, each stored
/// once in an arena.
#[derive(Debug, Default)]
struct Interner {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    arena: Vec<u8>,
    /// End of id `i`'s bytes in `arena`.
    ends: Vec<usize>,
}

/// Id `id`'s bytes (a free function, so that a rehash can borrow the
/// arena while the table is being grown).
fn interned<'a>(arena: &'a [u8], ends: &[usize], id: u32) -> &'a [u8] {
    let i = id as usize;
    &arena[if i == 0 { 0 } else { ends[i - 1] }..ends[i]]
}

impl Interner {
    fn get(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let found = self
            .table
            .find(hash, |&id| interned(&self.arena, &self.ends, id) == key);
        found.copied()
    }

    fn intern(&mut self, key: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(key);
        let Interner {
            table,
            hasher,
            arena,
            ends,
        } = self;
        if let Some(&id) = table.find(hash, |&id| interned(arena, ends, id) == key) {
            return id;
        }
        let id = ends.len() as u32;
        arena.extend_from_slice(key);
        ends.push(arena.len());
        let rehash = |&id: &u32| hasher.hash_one(interned(arena, ends, id));
        table.insert_unique(hash, id, rehash);
        id
    }

    fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    fn memory_size(&self) -> usize {
        self.table.allocation_size() + self.arena.capacity() + self.ends.capacity() * 8
    }
}

/// Tuples of `width` 64-bit words -> ids `0..len` in order of first
/// appearance, stored flat: a composite key's parts as words (an int as
/// itself, a string key as its [`Symbols`] id), compared word by word.
#[derive(Debug, Default)]
struct Tuples {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    words: Vec<u64>,
    width: usize,
}

fn same_words(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

impl Tuples {
    fn new(width: usize) -> Self {
        Tuples {
            width,
            ..Tuples::default()
        }
    }

    fn tuple(&self, id: u32) -> &[u64] {
        let i = id as usize * self.width;
        &self.words[i..i + self.width]
    }

    fn get(&self, key: &[u64]) -> Option<u32> {
        self.get_hashed(self.hasher.hash_one(key), key)
    }

    fn intern(&mut self, key: &[u64]) -> u32 {
        let hash = self.hasher.hash_one(key);
        if let Some(id) = self.get_hashed(hash, key) {
            return id;
        }
        let id = (self.words.len() / self.width) as u32;
        self.words.extend_from_slice(key);
        let Tuples {
            table,
            hasher,
            words,
            width,
        } = self;
        let rehash = |&id: &u32| {
            let i = id as usize * *width;
            hasher.hash_one(&words[i..i + *width])
        };
        table.insert_unique(hash, id, rehash);
        id
    }

    fn get_hashed(&self, hash: u64, key: &[u64]) -> Option<u32> {
        (self.table)
            .find(hash, |&id| same_words(self.tuple(id), key))
            .copied()
    }

    fn memory_size(&self) -> usize {
        self.table.allocation_size() + self.words.capacity() * 8
    }
}

/// Every string value of the indexed side's string key columns -> an id
/// (in order of first appearance), shared by all indexes. Keys are mapped
/// to ids once, so that each index keys by an int (usually dense, read
/// with no hash at all; a hash map when a selective `where` or a source
/// with few of the values spreads its ids out), and a spine row's string
/// key is hashed once, not once per index that reads it.
#[derive(Debug, Default)]
pub(super) struct Symbols {
    strings: Interner,
}

impl Symbols {
    /// The ids of `column`'s values (int64, nulls kept), interning new ones;
    /// an error if the ids could pass 2^32 - 1.
    pub fn intern_column(&mut self, column: &ArrayRef) -> Result<ArrayRef> {
        let strings = column.as_string::<i32>();
        if self.strings.ends.len() + strings.len() >= u32::MAX as usize {
            return Err(DataFusionError::Execution(format!(
                "more than {} string key values; the indexed side holds fewer than 2^32",
                self.strings.ends.len() + strings.len()
            )));
        }
        let ids: Int64Array = strings
            .iter()
            .map(|s| s.map(|s| i64::from(self.strings.intern(s.as_bytes()))))
            .collect();
        Ok(Arc::new(ids))
    }

    /// The ids of `column`'s values; a value no indexed source holds is
    /// null, which, like a null, has no slot in any index.
    pub fn lookup_column(&self, column: &ArrayRef) -> ArrayRef {
        let strings = column.as_string::<i32>();
        let ids: Int64Array = strings
            .iter()
            .map(|s| {
                s.and_then(|s| self.strings.get(s.as_bytes()))
                    .map(i64::from)
            })
            .collect();
        Arc::new(ids)
    }

    /// Gives back the room the stored strings grew into and do not use.
    pub fn shrink(&mut self) {
        self.strings.shrink();
    }

    pub fn memory_size(&self) -> usize {
        self.strings.memory_size()
    }
}

/// Distinct keys -> slots.
#[derive(Debug)]
pub(super) struct KeyDict {
    kind: Kind,
    len: usize,
}

#[derive(Debug)]
enum Kind {
    /// A single int64 key: a map, or, when the ids are dense, `min` (a key's
    /// slot is `key - min`; an id in the span without rows has an empty slot).
    Int {
        slots: HashMap<i64, u32>,
        dense: Option<i64>,
    },
    /// Several parts: the tuple of their values interned to the slot.
    Parts(Tuples),
}

impl KeyDict {
    /// An empty dictionary for keys of these columns.
    pub fn for_columns(keys: &KeyColumns<'_>) -> Self {
        let kind = match keys.parts.len() {
            1 => Kind::Int {
                slots: HashMap::new(),
                dense: None,
            },
            parts => Kind::Parts(Tuples::new(parts)),
        };
        KeyDict { kind, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes the dictionary holds.
    pub fn memory_size(&self) -> usize {
        match &self.kind {
            Kind::Int { slots, .. } => slots.allocation_size(),
            Kind::Parts(tuples) => tuples.memory_size(),
        }
    }

    /// The slot of each row's key, inserting new keys; [`NO_SLOT`] for a
    /// null part.
    pub fn insert_all(&mut self, keys: &KeyColumns<'_>, rows: usize, out: &mut Vec<u32>) {
        out.clear();
        out.reserve(rows);
        let mut tuple = Vec::with_capacity(keys.parts.len());
        for row in 0..rows {
            if keys.parts.iter().any(|p| p.is_null(row)) {
                out.push(NO_SLOT);
                continue;
            }
            let slot = match &mut self.kind {
                Kind::Int { slots, .. } => {
                    let next = slots.len() as u32;
                    *slots.entry(keys.parts[0].value(row)).or_insert(next)
                }
                Kind::Parts(tuples) => {
                    tuple.clear();
                    tuple.extend(keys.parts.iter().map(|p| p.value(row) as u64));
                    tuples.intern(&tuple)
                }
            };
            self.len = self.len.max(slot as usize + 1);
            out.push(slot);
        }
    }

    /// Gives back the room stored tuples grew into and do not use, and
    /// switches int keys to dense slots when they span little more than
    /// their number (ids usually do): a key's slot is then `key - min`, with
    /// no table to read (a table from key to slot was one more cache miss
    /// per spine row and index once the keys outgrow the cache). Returns
    /// the new slot of each slot `insert_all` gave, when they changed.
    #[must_use]
    pub fn finish(&mut self) -> Option<Vec<u32>> {
        let (slots, dense) = match &mut self.kind {
            Kind::Int { slots, dense } => (slots, dense),
            Kind::Parts(tuples) => {
                tuples.words.shrink_to_fit();
                return None;
            }
        };
        let (Some(min), Some(max)) = (slots.keys().min(), slots.keys().max()) else {
            return None;
        };
        let span = max
            .checked_sub(*min)
            .and_then(|s| usize::try_from(s).ok())?;
        if span >= 4 * slots.len() + 1024 || span >= u32::MAX as usize - 1 {
            return None;
        }
        let mut renumbered = vec![0u32; self.len];
        for (&k, &slot) in slots.iter() {
            renumbered[slot as usize] = (k - min) as u32;
        }
        *dense = Some(*min);
        self.len = span + 1;
        *slots = HashMap::new();
        Some(renumbered)
    }

    /// The slot of each row's key; `None` for an unknown key or a null part.
    pub fn lookup_all(&self, keys: &KeyColumns<'_>, rows: usize, out: &mut Vec<Option<u32>>) {
        out.clear();
        match (&self.kind, keys.parts.as_slice()) {
            (Kind::Int { slots, dense }, [a]) => {
                // Straight over the values: this runs once per spine row and index.
                let values = &a.values()[..rows];
                let slot = |k: i64| match *dense {
                    Some(min) => {
                        let i = u32::try_from(k.checked_sub(min)?).ok()?;
                        ((i as usize) < self.len).then_some(i)
                    }
                    None => slots.get(&k).copied(),
                };
                match a.nulls() {
                    None => out.extend(values.iter().map(|&k| slot(k))),
                    Some(nulls) => out.extend(
                        values
                            .iter()
                            .enumerate()
                            .map(|(row, &k)| nulls.is_valid(row).then(|| slot(k)).flatten()),
                    ),
                }
            }
            (Kind::Parts(tuples), parts) if parts.len() == tuples.width => {
                let mut tuple = Vec::with_capacity(parts.len());
                out.extend((0..rows).map(|row| {
                    if parts.iter().any(|p| p.is_null(row)) {
                        return None;
                    }
                    tuple.clear();
                    tuple.extend(parts.iter().map(|p| p.value(row) as u64));
                    tuples.get(&tuple)
                }));
            }
            // Keys of another shape than the index's never match (the spec
            // pairs key columns, so this does not happen).
            _ => out.extend((0..rows).map(|_| None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as StdMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use datafusion::arrow::array::StringArray;

    use super::*;

    /// A key column as the index sees it: strings as their ids, interned
    /// (the indexed side) or looked up (the spine).
    fn as_ids(symbols: &mut Symbols, column: ArrayRef, intern: bool) -> ArrayRef {
        match column.data_type() {
            DataType::Utf8 if intern => symbols.intern_column(&column).unwrap(),
            DataType::Utf8 => symbols.lookup_column(&column),
            _ => column,
        }
    }

    #[test]
    fn composite_keys_never_collide_and_nulls_have_no_slot() {
        // A string part is its id, so ("a", 1) and ("ab", 1) differ.
        let s: ArrayRef = Arc::new(StringArray::from(vec![
            Some("ab"),
            Some("a"),
            None,
            Some("ab"),
        ]));
        let i: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(1), None]));
        let s = as_ids(&mut Symbols::default(), s, true);
        let keys = KeyColumns::new(vec![&s, &i]).unwrap();
        let mut dict = KeyDict::for_columns(&keys);
        let mut slots = Vec::new();
        dict.insert_all(&keys, 4, &mut slots);
        assert_eq!(slots, vec![0, 1, NO_SLOT, NO_SLOT]);
        let mut found = Vec::new();
        dict.lookup_all(&keys, 4, &mut found);
        assert_eq!(found, vec![Some(0), Some(1), None, None]);
    }

    #[test]
    fn string_parts_are_delimited_by_their_length() {
        // Strings joined with a separator would make ("a\u{1}b", "c") and
        // ("a", "b\u{1}c") one key; a string id per part keeps them apart.
        let a: ArrayRef = Arc::new(StringArray::from(vec!["a\u{1}b", "a"]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["c", "b\u{1}c"]));
        let mut symbols = Symbols::default();
        let (a, b) = (as_ids(&mut symbols, a, true), as_ids(&mut symbols, b, true));
        let keys = KeyColumns::new(vec![&a, &b]).unwrap();
        let mut dict = KeyDict::for_columns(&keys);
        let mut slots = Vec::new();
        dict.insert_all(&keys, 2, &mut slots);
        assert_eq!(slots, vec![0, 1]);
    }

    #[test]
    fn dense_and_sparse_int_keys() {
        for values in [vec![5, 9, 5, 6], vec![i64::MIN, i64::MAX, 0, i64::MIN]] {
            let a: ArrayRef = Arc::new(Int64Array::from(values.clone()));
            let keys = KeyColumns::new(vec![&a]).unwrap();
            let mut dict = KeyDict::for_columns(&keys);
            let mut slots = Vec::new();
            dict.insert_all(&keys, 4, &mut slots);
            if let Some(renumbered) = dict.finish() {
                for slot in &mut slots {
                    *slot = renumbered[*slot as usize];
                }
            }
            let mut found = Vec::new();
            dict.lookup_all(&keys, 4, &mut found);
            assert_eq!(found, slots.iter().map(|&s| Some(s)).collect::<Vec<_>>());
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
        let mut dict = KeyDict::for_columns(&keys);
        let mut slots = Vec::new();
        dict.insert_all(&keys, 4, &mut slots);
        assert_eq!(dict.finish(), Some(vec![0, 4, 1]));
        assert_eq!(dict.len(), 5);
        let gap: ArrayRef = Arc::new(Int64Array::from(vec![7, 9]));
        let mut found = Vec::new();
        dict.lookup_all(&KeyColumns::new(vec![&gap]).unwrap(), 2, &mut found);
        assert_eq!(found, vec![Some(2), Some(4)]);
    }

    /// A key part as the oracle sees it.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    enum Value {
        Int(i64),
        Str(String),
    }

    fn column(int: bool, values: &[Option<Value>]) -> ArrayRef {
        if int {
            Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            })))
        } else {
            Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            })))
        }
    }

    proptest! {
        /// Slots are given in order of first appearance, equal keys share
        /// one and distinct keys never do; a lookup finds what was
        /// inserted, and a key never inserted has no slot. Few distinct
        /// values per part (many repeats), strings that are prefixes of one
        /// another, ints at the extremes.
        #[test]
        fn slots_match_a_map_of_whole_keys(
            types in proptest::collection::vec(any::<bool>(), 1..4),
            rows in proptest::collection::vec(
                proptest::collection::vec((0u8..6, any::<bool>()), 3),
                0..60,
            ),
            probes in proptest::collection::vec(
                proptest::collection::vec((0u8..8, any::<bool>()), 3),
                0..30,
            ),
        ) {
            let value = |int: bool, (v, valid): (u8, bool)| {
                valid.then(|| match (int, v) {
                    (true, 0) => Value::Int(i64::MIN),
                    (true, 1) => Value::Int(i64::MAX),
                    (true, v) => Value::Int(i64::from(v) * 1000 - 3000),
                    (false, v) => Value::Str("ab".repeat(usize::from(v) / 2) + &"a".repeat(usize::from(v) % 2)),
                })
            };
            let table = |rows: &[Vec<(u8, bool)>]| -> Vec<Vec<Option<Value>>> {
                types
                    .iter()
                    .enumerate()
                    .map(|(p, &int)| rows.iter().map(|r| value(int, r[p])).collect())
                    .collect()
            };
            let (inserted, probed) = (table(&rows), table(&probes));
            let mut symbols = Symbols::default();
            let columns: Vec<ArrayRef> = types.iter().zip(&inserted).map(|(&i, v)| as_ids(&mut symbols, column(i, v), true)).collect();
            let keys = KeyColumns::new(columns.iter().collect()).unwrap();
            let mut dict = KeyDict::for_columns(&keys);
            let mut slots = Vec::new();
            dict.insert_all(&keys, rows.len(), &mut slots);
            let renumbered = dict.finish();
            let whole = |t: &[Vec<Option<Value>>], row: usize| -> Option<Vec<Value>> {
                t.iter().map(|c| c[row].clone()).collect()
            };
            // The oracle: whole keys in order of first appearance.
            let mut oracle: StdMap<Vec<Value>, u32> = StdMap::new();
            for (row, &slot) in slots.iter().enumerate() {
                match whole(&inserted, row) {
                    None => prop_assert_eq!(slot, NO_SLOT),
                    Some(key) => {
                        let next = oracle.len() as u32;
                        let expected = *oracle.entry(key).or_insert(next);
                        prop_assert_eq!(slot, expected);
                    }
                }
            }
            let slot_of = |key: &Vec<Value>| {
                oracle.get(key).map(|&s| renumbered.as_ref().map_or(s, |r| r[s as usize]))
            };
            let probe_columns: Vec<ArrayRef> = types.iter().zip(&probed).map(|(&i, v)| as_ids(&mut symbols, column(i, v), false)).collect();
            let mut found = Vec::new();
            dict.lookup_all(&KeyColumns::new(probe_columns.iter().collect()).unwrap(), probes.len(), &mut found);
            let used: Vec<u32> = oracle.keys().filter_map(slot_of).collect();
            for (row, found) in found.iter().enumerate() {
                match whole(&probed, row).map(|k| slot_of(&k)) {
                    None => prop_assert_eq!(*found, None),
                    Some(Some(expected)) => prop_assert_eq!(*found, Some(expected)),
                    // A key never inserted has no slot, or (dense ids) an
                    // empty one of its own.
                    _ => prop_assert!(found.is_none_or(|s| !used.contains(&s))),
                }
            }
        }
    }
}
