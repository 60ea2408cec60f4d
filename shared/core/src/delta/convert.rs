//! Arrow ↔ polars for the tables: cleaned frames into the table's exact arrow schema, quarantine
//! entries into batches, and batches back into frames.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Float64Array, Float64Builder, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType as ArrowType, SchemaRef, TimeUnit as ArrowUnit};
use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::record::QuarantineEntry;
use super::*;

/// A cleaned polars frame → a batch in the table's exact arrow schema (casts strings to
/// Utf8, naive datetimes to UTC timestamps, packs geo `latitude`/`longitude` as `coordinates`).
pub fn frame_to_batch(df: &DataFrame, schema: SchemaRef) -> Result<RecordBatch> {
    let cols: HashMap<String, ArrayRef> = bridge::frame_columns(df)?.into_iter().collect();
    let column = |n: &str| {
        cols.get(n).cloned().ok_or_else(|| Error::Config(format!("cleaned frame lacks column {n}")))
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array = match (field.name().as_str(), field.data_type()) {
            ("coordinates", ArrowType::List(item)) => {
                let lat = cast_f64(&column("latitude")?)?;
                let lon = cast_f64(&column("longitude")?)?;
                let mut values = Float64Builder::with_capacity(lat.len() * 2);
                for i in 0..lat.len() {
                    values.append_option(lat.is_valid(i).then(|| lat.value(i)));
                    values.append_option(lon.is_valid(i).then(|| lon.value(i)));
                }
                let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(2, lat.len()));
                Arc::new(ListArray::try_new(item.clone(), offsets, Arc::new(values.finish()), None)?)
            }
            (name, target) => arrow::compute::cast(&column(name)?, target)?,
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

pub(crate) fn cast_f64(a: &ArrayRef) -> Result<Float64Array> {
    let c = arrow::compute::cast(a, &ArrowType::Float64)?;
    c.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .ok_or_else(|| Error::Config("a coordinate column did not cast to Float64".into()))
}

/// Quarantine entries as a batch of the quarantine table.
pub fn quarantine_batch(entries: &[QuarantineEntry], schema: SchemaRef, at_micros: i64) -> Result<RecordBatch> {
    let strs = |f: fn(&QuarantineEntry) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(entries.iter().map(f)))
    };
    let raw: ArrayRef = Arc::new(BinaryArray::from_iter_values(entries.iter().map(|e| e.raw.as_ref())));
    let at: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(vec![at_micros; entries.len()]).with_timezone("UTC"),
    );
    let arrays = vec![
        strs(|e| &e.source),
        strs(|e| &e.partition),
        strs(|e| &e.position),
        strs(|e| &e.reason),
        raw,
        at,
    ];
    let arrays = arrays
        .into_iter()
        .zip(schema.fields())
        .map(|(a, f)| arrow::compute::cast(&a, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// A table's batches as one polars frame: `coordinates` split into `latitude`/`longitude`,
/// timestamps as naive UTC datetimes. `empty` names the columns when there are no rows.
pub fn batches_to_frame(batches: &[RecordBatch], schema: SchemaRef) -> Result<DataFrame> {
    let batch = match batches {
        [one] => one.clone(),
        many => arrow::compute::concat_batches(&schema, many)?,
    };
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            ArrowType::List(_) => {
                let list = array
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .ok_or_else(|| Error::Config(format!("{} is not a list", field.name())))?;
                let mut lat = Float64Builder::with_capacity(list.len());
                let mut lon = Float64Builder::with_capacity(list.len());
                for i in 0..list.len() {
                    let (a, b) = if list.is_valid(i) {
                        let v = list.value(i);
                        let v = v.as_any().downcast_ref::<Float64Array>().cloned();
                        let get = |j: usize| v.as_ref().filter(|v| v.len() > j && v.is_valid(j)).map(|v| v.value(j));
                        (get(0), get(1))
                    } else {
                        (None, None)
                    };
                    lat.append_option(a);
                    lon.append_option(b);
                }
                cols.push(("latitude".into(), Arc::new(lat.finish())));
                cols.push(("longitude".into(), Arc::new(lon.finish())));
            }
            ArrowType::Timestamp(unit, Some(_)) => {
                let naive = arrow::compute::cast(array, &ArrowType::Timestamp(*unit, None))?;
                let naive = arrow::compute::cast(&naive, &ArrowType::Timestamp(ArrowUnit::Microsecond, None))?;
                cols.push((field.name().clone(), naive));
            }
            _ => cols.push((field.name().clone(), array.clone())),
        }
    }
    bridge::frame_from_arrays(cols)
}

/// Frames of one schema stacked into one (no rows: an empty frame with `schema`'s columns).
pub(crate) fn stack_frames(frames: Vec<DataFrame>, schema: SchemaRef) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let Some(mut df) = frames.next() else { return batches_to_frame(&[], schema) };
    for f in frames {
        df.vstack_mut_owned(f)?;
    }
    Ok(df)
}
