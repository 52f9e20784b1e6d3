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

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Str(b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int8(b) => Arc::new(b.finish()),
        }
    }
}
