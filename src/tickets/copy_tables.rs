//! The evidence tables, column by column, and the row-for-row copies
//! between the two backends that `db copy` (copy.rs) and PostgreSQL
//! verification (pg.rs) use.

use super::Result;
use postgres::types::ToSql;

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Int,
    Text,
    Bool,
    Bytes,
}
use Ty::*;

/// A value of one column.
enum V {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// The evidence tables in foreign-key order, with their columns (`rowid`
/// is sqlite's implicit rowid, a real column on PostgreSQL).
const TABLES: &[(&str, &[(&str, Ty)])] = &[
    (
        "tickets",
        &[
            ("rowid", Int),
            ("id", Text),
            ("title", Text),
            ("status", Text),
            ("resolution", Text),
            ("created_at", Int),
            ("closed_at", Int),
        ],
    ),
    (
        "technicians",
        &[
            ("rowid", Int),
            ("name", Text),
            ("hash", Text),
            ("created_at", Int),
        ],
    ),
    (
        "sessions",
        &[
            ("id", Int),
            ("ticket", Text),
            ("peer", Text),
            ("direction", Text),
            ("security", Text),
            ("credential", Text),
            ("technician", Text),
            ("can_view", Bool),
            ("can_keys", Bool),
            ("can_pointer", Bool),
            ("can_clipboard", Bool),
            ("consent", Text),
            ("started_at", Int),
            ("ended_at", Int),
            ("end_reason", Text),
            ("bytes_in", Int),
            ("bytes_out", Int),
            ("updates_sent", Int),
            ("owner", Text),
        ],
    ),
    (
        "notes",
        &[
            ("id", Int),
            ("ticket", Text),
            ("at", Int),
            ("author", Text),
            ("text", Text),
        ],
    ),
    (
        "codes",
        &[
            ("id", Int),
            ("ticket", Text),
            ("nonce", Bytes),
            ("salt", Bytes),
            ("hash", Bytes),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", Int),
            ("revoked_at", Int),
        ],
    ),
    (
        "events",
        &[
            ("seq", Int),
            ("at", Int),
            ("session", Int),
            ("ticket", Text),
            ("kind", Text),
            ("details", Text),
            ("hash", Text),
        ],
    ),
    ("ticket_lang", &[("ticket", Text), ("lang", Text)]),
];

/// Sequences to move past the copied ids on PostgreSQL.
const SEQUENCES: &[(&str, &str)] = &[
    ("tickets", "rowid"),
    ("technicians", "rowid"),
    ("sessions", "id"),
    ("notes", "id"),
    ("codes", "id"),
];

fn columns(cols: &[(&str, Ty)]) -> String {
    cols.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
}

fn read_sqlite(r: &rusqlite::Row<'_>, i: usize, ty: Ty) -> rusqlite::Result<V> {
    use rusqlite::types::ValueRef;
    Ok(match (r.get_ref(i)?, ty) {
        (ValueRef::Null, _) => V::Null,
        (ValueRef::Integer(n), Bool) => V::Bool(n != 0),
        (ValueRef::Integer(n), _) => V::Int(n),
        (ValueRef::Text(t), _) => V::Text(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(b), _) => V::Bytes(b.to_vec()),
        (ValueRef::Real(f), _) => V::Int(f as i64),
    })
}

fn read_pg(r: &postgres::Row, i: usize, ty: Ty) -> Result<V> {
    Ok(match ty {
        Int => r.try_get::<_, Option<i64>>(i)?.map_or(V::Null, V::Int),
        Text => r.try_get::<_, Option<String>>(i)?.map_or(V::Null, V::Text),
        Bool => r.try_get::<_, Option<bool>>(i)?.map_or(V::Null, V::Bool),
        Bytes => r
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(V::Null, V::Bytes),
    })
}

fn pg_param(v: &V, ty: Ty) -> Box<dyn ToSql + Sync> {
    match (v, ty) {
        (V::Null, Int) => Box::new(None::<i64>),
        (V::Null, Text) => Box::new(None::<String>),
        (V::Null, Bool) => Box::new(None::<bool>),
        (V::Null, Bytes) => Box::new(None::<Vec<u8>>),
        (V::Int(n), _) => Box::new(*n),
        (V::Text(t), _) => Box::new(t.clone()),
        (V::Bool(b), _) => Box::new(*b),
        (V::Bytes(b), _) => Box::new(b.clone()),
    }
}

fn sqlite_param(v: &V) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        V::Null => S::Null,
        V::Int(n) => S::Integer(*n),
        V::Text(t) => S::Text(t.clone()),
        V::Bool(b) => S::Integer(*b as i64),
        V::Bytes(b) => S::Blob(b.clone()),
    }
}

/// Copies every evidence table of a PostgreSQL snapshot into an sqlite
/// database of the same schema version.
pub(crate) fn pg_to_sqlite(
    from: &mut postgres::Transaction<'_>,
    to: &rusqlite::Connection,
) -> Result<u64> {
    let mut n = 0;
    for (table, cols) in TABLES {
        let list = columns(cols);
        let placeholders = (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ins = to.prepare(&format!(
            "INSERT INTO {table} ({list}) VALUES ({placeholders})"
        ))?;
        let order = cols[0].0;
        let rows = from.query(&format!("SELECT {list} FROM {table} ORDER BY {order}"), &[])?;
        for r in &rows {
            let vals = cols
                .iter()
                .enumerate()
                .map(|(i, c)| read_pg(r, i, c.1).map(|v| sqlite_param(&v)))
                .collect::<Result<Vec<_>>>()?;
            ins.execute(rusqlite::params_from_iter(vals))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Copies every evidence table of an sqlite journal into an empty
/// PostgreSQL journal of the same schema version, then moves its
/// sequences past the copied ids. One `COPY .. FROM STDIN (FORMAT
/// binary)` per table: the rows stream to the server without a round trip
/// each (row-by-row INSERTs managed about 2,100 rows a second).
pub(super) fn sqlite_to_pg(
    from: &rusqlite::Connection,
    to: &mut postgres::Transaction<'_>,
) -> Result<u64> {
    use postgres::binary_copy::BinaryCopyInWriter;
    use postgres::types::Type;
    let mut n = 0;
    for (table, cols) in TABLES {
        let list = columns(cols);
        let types: Vec<Type> = cols
            .iter()
            .map(|c| match c.1 {
                Int => Type::INT8,
                Text => Type::TEXT,
                Bool => Type::BOOL,
                Bytes => Type::BYTEA,
            })
            .collect();
        let sink = to.copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        let order = cols[0].0;
        let mut st = from.prepare(&format!("SELECT {list} FROM {table} ORDER BY {order}"))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let params: Vec<Box<dyn ToSql + Sync>> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| read_sqlite(r, i, c.1).map(|v| pg_param(&v, c.1)))
                .collect::<rusqlite::Result<_>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
            writer.write(&refs)?;
            n += 1;
        }
        writer.finish()?;
    }
    for (table, col) in SEQUENCES {
        to.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'),
                    GREATEST((SELECT MAX({col}) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )?;
    }
    Ok(n)
}
