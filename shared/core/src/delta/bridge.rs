//! polars ↔ arrow-rs through the Arrow C Data Interface.
//!
//! polars has its own Arrow implementation and deltalake uses arrow-rs; the C Data Interface
//! is the stable ABI both speak, so columns cross without copying values.

use std::sync::Arc;

use arrow::array::{make_array, Array, ArrayRef};
use arrow::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use polars::prelude::*;
use polars_arrow::ffi as pffi;

use crate::error::{Error, Result};

// Both sides implement the same C structs; sizes must agree for the moves below to be sound.
const _: () = assert!(std::mem::size_of::<pffi::ArrowArray>() == std::mem::size_of::<FFI_ArrowArray>());
const _: () = assert!(std::mem::size_of::<pffi::ArrowSchema>() == std::mem::size_of::<FFI_ArrowSchema>());

/// One polars column → one arrow-rs array. Strings come out as Utf8View (polars' own layout,
/// no copy here); the Delta writer casts them to Utf8 once.
pub fn series_to_arrow(series: &Series) -> Result<ArrayRef> {
    let series = series.rechunk();
    let compat = CompatLevel::newest();
    let field = series.field().to_arrow(compat);
    let array = series.to_arrow(0, compat);
    let c_array = pffi::export_array_to_c(array);
    let c_schema = pffi::export_field_to_c(&field);
    // SAFETY: both types are `#[repr(C)]` renderings of the C Data Interface structs
    // (size checked above); ownership of the release callbacks moves with the values.
    let (c_array, c_schema) = unsafe {
        (
            std::mem::transmute::<pffi::ArrowArray, FFI_ArrowArray>(c_array),
            std::mem::transmute::<pffi::ArrowSchema, FFI_ArrowSchema>(c_schema),
        )
    };
    // SAFETY: the structs were just produced by a conforming exporter.
    let data = unsafe { from_ffi(c_array, &c_schema) }?;
    Ok(make_array(data))
}

/// One arrow-rs array → one polars column named `name`.
pub fn arrow_to_series(name: &str, array: &dyn Array) -> Result<Series> {
    let (c_array, c_schema) = to_ffi(&array.to_data())?;
    // SAFETY: see `series_to_arrow`; the same layout in the other direction.
    let (c_array, c_schema) = unsafe {
        (
            std::mem::transmute::<FFI_ArrowArray, pffi::ArrowArray>(c_array),
            std::mem::transmute::<FFI_ArrowSchema, pffi::ArrowSchema>(c_schema),
        )
    };
    // SAFETY: the structs were just produced by arrow-rs's conforming exporter.
    let field = unsafe { pffi::import_field_from_c(&c_schema) }?;
    let imported = unsafe { pffi::import_array_from_c(c_array, field.dtype().clone()) }?;
    Ok(Series::from_arrow(name.into(), imported)?)
}

/// A polars frame → arrow-rs arrays by column name (no schema adaptation here).
pub fn frame_columns(df: &DataFrame) -> Result<Vec<(String, ArrayRef)>> {
    df.columns()
        .iter()
        .map(|c| Ok((c.name().to_string(), series_to_arrow(c.as_materialized_series())?)))
        .collect()
}

/// Builds a polars frame from named arrow-rs arrays of equal length.
pub fn frame_from_arrays(columns: Vec<(String, Arc<dyn Array>)>) -> Result<DataFrame> {
    let height = columns.first().map(|(_, a)| a.len()).unwrap_or(0);
    let cols = columns
        .into_iter()
        .map(|(name, a)| Ok(arrow_to_series(&name, a.as_ref())?.into_column()))
        .collect::<Result<Vec<Column>>>()?;
    DataFrame::new(height, cols).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn round_trips_both_ways() {
        let df = df!("ind" => [Some(1i64), None, Some(3)], "s" => [Some("a"), None, Some("ü\u{a0}")]).unwrap();
        let cols = frame_columns(&df).unwrap();
        let ints = cols[0].1.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ints.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(3)]);
        let back = frame_from_arrays(cols).unwrap();
        assert!(back.equals_missing(&df));
        let s = StringArray::from(vec![Some("x"), None]);
        let series = arrow_to_series("x", &s).unwrap();
        assert_eq!(series.str().unwrap().get(0), Some("x"));
        assert_eq!(series.null_count(), 1);
    }
}
