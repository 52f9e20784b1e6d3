//! Typed column builders fed one value at a time: the CSV reader and the
//! simulator's Parquet writer share them.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int8Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};

use crate::spec::ValueType;

/// One value, before it is committed to a builder.
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Ts(i64),
    Bool(bool),
}

impl Value<'_> {
    /// The value a word holds for a builder of `ty`: an integer or µs as
    /// is, a float's bits, a bool as 0 or 1.
    pub(crate) fn of_word(ty: ValueType, word: i64) -> Value<'static> {
        match ty {
            ValueType::Int64 | ValueType::Int8 => Value::Int(word),
            ValueType::Float64 => Value::Float(f64::from_bits(word as u64)),
            ValueType::Bool => Value::Bool(word != 0),
            ValueType::Timestamp => Value::Ts(word),
            ValueType::String => Value::Null,
        }
    }
}

pub(crate) enum ColumnBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
    Int8(Int8Builder),
}

impl ColumnBuilder {
    pub(crate) fn new(ty: ValueType, capacity: usize) -> Self {
        match ty {
            ValueType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(capacity)),
            ValueType::Int8 => ColumnBuilder::Int8(Int8Builder::with_capacity(capacity)),
            ValueType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ValueType::Float64 => ColumnBuilder::Float(Float64Builder::with_capacity(capacity)),
            ValueType::String => {
                ColumnBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            ValueType::Timestamp => ColumnBuilder::Ts(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
        }
    }

    pub(crate) fn push(&mut self, value: &Value<'_>) {
        match (self, value) {
            (ColumnBuilder::Int(b), Value::Int(x)) => b.append_value(*x),
            (ColumnBuilder::Float(b), Value::Float(x)) => b.append_value(*x),
            (ColumnBuilder::Str(b), Value::Str(x)) => b.append_value(x),
            (ColumnBuilder::Ts(b), Value::Ts(x)) => b.append_value(*x),
            (ColumnBuilder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (ColumnBuilder::Int8(b), Value::Int(x)) => b.append_value(*x as i8),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Str(b), _) => b.append_null(),
            (ColumnBuilder::Ts(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Int8(b), _) => b.append_null(),
        }
    }

    /// Appends a column of words ([`Value::of_word`]), each null where
    /// `nulls` (each value's validity; none: every one valid) says so.
    pub(crate) fn extend_words(&mut self, words: &[i64], nulls: Option<&[bool]>) {
        let valid = |i: usize| nulls.is_none_or(|v| v[i]);
        match self {
            ColumnBuilder::Int(b) => match nulls {
                None => b.append_slice(words),
                Some(v) => b.append_values(words, v),
            },
            ColumnBuilder::Ts(b) => match nulls {
                None => b.append_slice(words),
                Some(v) => b.append_values(words, v),
            },
            ColumnBuilder::Float(b) => (0..words.len())
                .for_each(|i| b.append_option(valid(i).then(|| f64::from_bits(words[i] as u64)))),
            ColumnBuilder::Bool(b) => {
                (0..words.len()).for_each(|i| b.append_option(valid(i).then_some(words[i] != 0)))
            }
            ColumnBuilder::Int8(b) => {
                (0..words.len()).for_each(|i| b.append_option(valid(i).then_some(words[i] as i8)))
            }
            // Texts go through `extend_texts`.
            ColumnBuilder::Str(b) => {
                debug_assert!(false, "words for a string column");
                (0..words.len()).for_each(|_| b.append_null())
            }
        }
    }

    /// Appends a column of texts, each null where `nulls` (each value's
    /// validity; none: every one valid) says so.
    pub(crate) fn extend_texts(&mut self, texts: &[&str], nulls: Option<&[bool]>) {
        let ColumnBuilder::Str(b) = self else {
            debug_assert!(false, "texts for a column of words");
            return (0..texts.len()).for_each(|_| self.push(&Value::Null));
        };
        for (i, text) in texts.iter().enumerate() {
            match nulls.is_none_or(|v| v[i]) {
                true => b.append_value(text),
                false => b.append_null(),
            }
        }
    }

    /// The column so far; the builder starts again with room for as many
    /// values (an arrow builder's `finish` leaves it none, and it grew by
    /// doubling, each step a copy, for every batch).
    pub(crate) fn finish(&mut self) -> ArrayRef {
        let (array, ty): (ArrayRef, _) = match self {
            ColumnBuilder::Int(b) => (Arc::new(b.finish()), ValueType::Int64),
            ColumnBuilder::Float(b) => (Arc::new(b.finish()), ValueType::Float64),
            ColumnBuilder::Str(b) => (Arc::new(b.finish()), ValueType::String),
            ColumnBuilder::Ts(b) => (Arc::new(b.finish()), ValueType::Timestamp),
            ColumnBuilder::Bool(b) => (Arc::new(b.finish()), ValueType::Bool),
            ColumnBuilder::Int8(b) => (Arc::new(b.finish()), ValueType::Int8),
        };
        *self = ColumnBuilder::new(ty, array.len());
        array
    }
}
