//! The contract's exact table schemas (§4) and their arrow form.


use arrow::datatypes::SchemaRef;
use deltalake::kernel::{ArrayType, DataType, StructField};
use deltalake::writer::RecordBatchWriter;
use deltalake::DeltaTable;

use crate::error::{Error, Result};
use crate::names::Kind;

/// contract §4 columns of a cleaned table, in order.
pub fn data_schema(kind: Kind) -> Vec<StructField> {
    let s = |n: &str| StructField::new(n, DataType::STRING, true);
    let key = StructField::new("ind", DataType::LONG, false);
    match kind {
        Kind::Pin => vec![
            key,
            s("unique_id"),
            s("title"),
            s("description"),
            StructField::new("follower_count", DataType::LONG, true),
            s("poster_name"),
            s("tag_list"),
            s("is_image_or_video"),
            s("image_src"),
            s("save_location"),
            s("category"),
        ],
        Kind::Geo => vec![
            key,
            s("country"),
            StructField::new(
                "coordinates",
                DataType::Array(Box::new(ArrayType::new(DataType::DOUBLE, true))),
                false,
            ),
            StructField::new("timestamp", DataType::TIMESTAMP, true),
        ],
        Kind::User => vec![
            key,
            s("user_name"),
            StructField::new("age", DataType::LONG, true),
            StructField::new("date_joined", DataType::TIMESTAMP, true),
        ],
    }
}

/// contract §4 quarantine columns.
pub fn quarantine_schema() -> Vec<StructField> {
    let s = |n: &str| StructField::new(n, DataType::STRING, true);
    vec![
        s("source"),
        s("partition"),
        s("position"),
        s("reason"),
        StructField::new("raw", DataType::BINARY, true),
        StructField::new("quarantined_at", DataType::TIMESTAMP, true),
    ]
}

pub(crate) fn describe(fields: &[StructField]) -> Vec<String> {
    fields
        .iter()
        .map(|f| format!("{} {:?}{}", f.name(), f.data_type(), if f.is_nullable() { "" } else { " not null" }))
        .collect()
}

/// The arrow schema the table's writer expects.
pub fn arrow_schema(table: &DeltaTable, name: &str) -> Result<SchemaRef> {
    Ok(RecordBatchWriter::for_table(table).map_err(|e| Error::delta(name, e))?.arrow_schema())
}
