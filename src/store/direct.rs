//! SQLite written directly: one rusqlite connection, owned by the SQLite
//! writer thread, behind the same [`Conn`] the store core runs every
//! write on.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and
//! hands every statement to it and every result back, each a wake-up of
//! the other thread. A write batch is half a dozen statements, so a
//! decision paid several thread hand-offs. Here the thread that owns the
//! connection runs the statements itself, from prepared statements it
//! keeps: the only hand-offs are a write's arrival and its answer.
//!
//! Every [`Conn`] method here has finished its work by the time it
//! returns its future (already ready), so the writer thread drives the
//! store core's async writes with [`finish`], a single poll.

use super::StoreError;
use super::conn::{Arg, Columns, Conn};
use rusqlite::types::Value;
use rusqlite::{CachedStatement, Connection, OpenFlags};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Prepared statements kept per connection: every statement of the store
/// core, with room to spare.
const STATEMENT_CACHE: usize = 128;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Full(e.to_string())
            }
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Opens the writer's connection to the database file `path`, which must
/// exist already (the sqlx pool created it and ran the migrations), with
/// the settings the pool's connections have: WAL, `synchronous = FULL`,
/// foreign keys enforced, a busy wait of `busy`.
pub(crate) fn open(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!(
            "the SQLite writer cannot open {}: {e} (gavel keeps its state in a database file; \
             in-memory databases are not supported)",
            path.display()
        ))
    })?;
    conn.busy_timeout(busy)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The file must be the migrated database the pool opened.
    let migrated: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_heads'",
        [],
        |r| r.get(0),
    )?;
    if migrated != 1 {
        return Err(StoreError::Unavailable(format!(
            "the SQLite writer opened {} but found no gavel tables in it",
            path.display()
        )));
    }
    Ok(conn)
}

/// The writer thread's connection, as the store core sees it, with the
/// multi-row insert statements it has written.
pub(crate) struct Direct<'c> {
    pub(crate) conn: &'c mut Connection,
    pub(crate) shapes: &'c mut Shapes,
}

/// A row read through [`Direct`]: its values, owned, and the statement's
/// column names, shared by every row of one result.
pub(crate) struct DirectRow {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl DirectRow {
    fn value(&self, col: &str) -> Result<&Value, StoreError> {
        self.names
            .iter()
            .position(|n| n == col)
            .map(|i| &self.values[i])
            .ok_or_else(|| StoreError::Corrupt(format!("no column `{col}` in the row")))
    }

    fn wrong(col: &str, wanted: &str, found: &Value) -> StoreError {
        StoreError::Corrupt(format!(
            "column `{col}`: expected {wanted}, found {:?}",
            found.data_type()
        ))
    }
}

impl Columns for DirectRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        match self.value(col)? {
            Value::Text(s) => Ok(s.clone()),
            v => Err(Self::wrong(col, "text", v)),
        }
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        match self.value(col)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(Self::wrong(col, "text or null", v)),
        }
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        match self.value(col)? {
            Value::Integer(i) => Ok(*i),
            v => Err(Self::wrong(col, "an integer", v)),
        }
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        match self.value(col)? {
            Value::Null => Ok(None),
            Value::Integer(i) => Ok(Some(*i)),
            v => Err(Self::wrong(col, "an integer or null", v)),
        }
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        match self.value(col)? {
            Value::Integer(i) => Ok(*i != 0),
            v => Err(Self::wrong(col, "0 or 1", v)),
        }
    }
}

/// How a statement's parameters are matched with its arguments.
#[derive(Clone, Copy)]
enum Params {
    /// By name: `$n` is the n-th argument. The store core's statements may
    /// use a name twice or out of order, and SQLite numbers distinct names
    /// in order of first appearance, so the position says nothing.
    Named,
    /// The n-th parameter is `$n`, by construction ([`shape`]): no name
    /// is looked up (SQLite finds a name by walking a list, so looking up
    /// each of a 64-row insert's hundreds of parameters costs quadratic
    /// time).
    InOrder,
}

/// Binds `args` to a statement whose parameters are `$1`, `$2`, ….
fn bind(st: &mut CachedStatement<'_>, args: &[Arg<'_>], params: Params) -> Result<(), StoreError> {
    let count = st.parameter_count();
    if let Params::InOrder = params
        && count != args.len()
    {
        return Err(StoreError::Unavailable(format!(
            "a statement of {count} parameters was given {} arguments",
            args.len()
        )));
    }
    for i in 1..=count {
        let (index, name) = match params {
            Params::Named => {
                let name = st.parameter_name(i);
                let index = name
                    .and_then(|n| n.strip_prefix('$'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1));
                (index, name)
            }
            Params::InOrder => (Some(i - 1), None),
        };
        let Some(arg) = index.and_then(|n| args.get(n)) else {
            return Err(StoreError::Unavailable(format!(
                "statement parameter {i} ({}) has no argument among {}",
                name.unwrap_or("?"),
                args.len()
            )));
        };
        match *arg {
            Arg::Text(v) => st.raw_bind_parameter(i, v),
            Arg::OptText(v) => st.raw_bind_parameter(i, v),
            Arg::Int(v) => st.raw_bind_parameter(i, v),
            Arg::OptInt(v) => st.raw_bind_parameter(i, v),
            Arg::Bool(v) => st.raw_bind_parameter(i, v),
        }?;
    }
    Ok(())
}

impl Direct<'_> {
    fn run(&mut self, sql: &str, args: &[Arg<'_>], params: Params) -> Result<u64, StoreError> {
        let mut st = self.conn.prepare_cached(sql)?;
        bind(&mut st, args, params)?;
        Ok(st.raw_execute()? as u64)
    }

    /// Every row `sql` returns (all are stepped through, so a statement
    /// with `RETURNING` has done all its work when this returns).
    fn rows(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        params: Params,
    ) -> Result<Vec<DirectRow>, StoreError> {
        let mut st = self.conn.prepare_cached(sql)?;
        bind(&mut st, args, params)?;
        let names: Arc<[String]> = st.column_names().into_iter().map(str::to_owned).collect();
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..names.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(DirectRow {
                names: Arc::clone(&names),
                values,
            });
        }
        Ok(out)
    }

    /// `head VALUES (…), (…) tail` in statements of [`SHAPES`] rows
    /// (largest first), so a batch of any size is a few executions of a
    /// few prepared statements: one statement per row costs SQLite more
    /// (each opens the table and every index again), and one statement
    /// per batch size would be prepared anew for most batches.
    fn insert_each(
        &mut self,
        head: &'static str,
        rows: &[Vec<Arg<'_>>],
        tail: &'static str,
    ) -> Result<Vec<DirectRow>, StoreError> {
        let Some(width) = rows.first().map(Vec::len) else {
            return Ok(Vec::new());
        };
        if let Some(bad) = rows.iter().find(|r| r.len() != width) {
            return Err(StoreError::Unavailable(format!(
                "a multi-row insert mixes rows of {width} and {} values",
                bad.len()
            )));
        }
        let mut out = Vec::new();
        let mut rest = rows;
        while !rest.is_empty() {
            let k = SHAPES.into_iter().find(|&k| k <= rest.len()).unwrap_or(1);
            let (chunk, after) = rest.split_at(k);
            rest = after;
            let sql = self
                .shapes
                .entry((head, tail, width, k))
                .or_insert_with(|| shape(head, tail, width, k))
                .clone();
            let args: Vec<Arg<'_>> = chunk.iter().flatten().copied().collect();
            if tail.is_empty() {
                self.run(&sql, &args, Params::InOrder)?;
            } else {
                out.extend(self.rows(&sql, &args, Params::InOrder)?);
            }
        }
        Ok(out)
    }
}

/// Rows per multi-row insert statement.
const SHAPES: [usize; 4] = [64, 16, 4, 1];

/// The text of each multi-row insert prepared so far, by its head, tail,
/// row width and row count.
pub(crate) type Shapes = HashMap<(&'static str, &'static str, usize, usize), Arc<str>>;

/// `head VALUES ($1, …), (…) tail` for `rows` rows of `width` values.
fn shape(head: &str, tail: &str, width: usize, rows: usize) -> Arc<str> {
    let mut sql = format!("{head} VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(sql, "${}", r * width + c + 1);
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql.into()
}

impl Conn for Direct<'_> {
    type Row = DirectRow;

    fn execute<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        std::future::ready(self.run(sql, args, Params::Named))
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Vec<DirectRow>, StoreError>> + Send + 'a {
        std::future::ready(self.rows(sql, args, Params::Named))
    }

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Option<DirectRow>, StoreError>> + Send + 'a {
        std::future::ready(
            self.rows(sql, args, Params::Named)
                .map(|rows| rows.into_iter().next()),
        )
    }

    fn insert_rows<'a>(
        &'a mut self,
        head: &'static str,
        rows: &'a [Vec<Arg<'a>>],
        tail: &'static str,
    ) -> impl Future<Output = Result<Vec<DirectRow>, StoreError>> + Send + 'a {
        std::future::ready(self.insert_each(head, rows, tail))
    }
}

/// The output of a future that never waits, which every future made only
/// of [`Direct`]'s calls is; `None` if it did wait (it is then dropped,
/// and with it the answers it held: their callers are told the write
/// never ran).
pub(crate) fn finish<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated-looking database file with a writer connection open on it.
    struct Db {
        _dir: tempfile::TempDir,
        conn: Connection,
        shapes: Shapes,
    }

    impl Db {
        fn new() -> Db {
            let (dir, conn) = db();
            Db {
                _dir: dir,
                conn,
                shapes: Shapes::new(),
            }
        }

        fn direct(&mut self) -> Direct<'_> {
            Direct {
                conn: &mut self.conn,
                shapes: &mut self.shapes,
            }
        }
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE audit_heads (chain TEXT PRIMARY KEY, seq INTEGER NOT NULL);
             CREATE TABLE t (a TEXT NOT NULL, b INTEGER, c INTEGER NOT NULL);",
        )
        .unwrap();
        drop(c);
        let c = open(&path, Duration::from_secs(1)).unwrap();
        (dir, c)
    }

    #[test]
    fn parameters_are_bound_by_their_number_not_their_position() {
        let mut db = Db::new();
        let mut d = db.direct();
        let n = finish(d.execute(
            "INSERT INTO t (c, b, a) VALUES ($3, $2, $1)",
            &[Arg::Text("x"), Arg::OptInt(None), Arg::Bool(true)],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(n, 1);
        let row = finish(d.fetch_optional(
            "SELECT a, b, c FROM t WHERE a = $1 AND ($2 IS NULL OR b = $2)",
            &[Arg::Text("x"), Arg::OptInt(None)],
        ))
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!(row.text("a").unwrap(), "x");
        assert_eq!(row.opt_int("b").unwrap(), None);
        assert!(row.flag("c").unwrap());
        assert!(matches!(row.int("a"), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.text("nope"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_missing_argument_is_an_error_not_a_null() {
        let mut db = Db::new();
        let mut d = db.direct();
        let e = finish(d.execute(
            "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)",
            &[Arg::Text("x"), Arg::Int(1)],
        ))
        .unwrap()
        .unwrap_err();
        assert!(e.to_string().contains("$3"), "{e}");
    }

    #[test]
    fn rows_are_inserted_in_order_and_returning_gives_each() {
        let mut db = Db::new();
        let mut d = db.direct();
        let rows = vec![
            vec![Arg::Text("a"), Arg::Int(1), Arg::Int(0)],
            vec![Arg::Text("b"), Arg::Int(2), Arg::Int(0)],
        ];
        let back = finish(d.insert_rows("INSERT INTO t (a, b, c)", &rows, " RETURNING b"))
            .unwrap()
            .unwrap();
        let got: Vec<i64> = back.iter().map(|r| r.int("b").unwrap()).collect();
        assert_eq!(got, [1, 2]);
        // 70 rows: statements of 64, 4, 1 and 1 rows, in order.
        let names: Vec<String> = (0..70).map(|i| format!("r{i}")).collect();
        let many: Vec<Vec<Arg>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| vec![Arg::Text(n), Arg::Int(100 + i as i64), Arg::Int(1)])
            .collect();
        let back = finish(d.insert_rows("INSERT INTO t (a, b, c)", &many, " RETURNING a, b"))
            .unwrap()
            .unwrap();
        let got: Vec<(String, i64)> = back
            .iter()
            .map(|r| (r.text("a").unwrap(), r.int("b").unwrap()))
            .collect();
        let want: Vec<(String, i64)> = (0..70).map(|i| (format!("r{i}"), 100 + i)).collect();
        assert_eq!(got, want);
        let n = finish(d.fetch_all("SELECT a FROM t WHERE c = $1", &[Arg::Int(1)]))
            .unwrap()
            .unwrap()
            .len();
        assert_eq!(n, 70);
        let ragged = vec![vec![Arg::Text("c"), Arg::Int(3), Arg::Int(0)], vec![]];
        assert!(
            finish(d.insert_rows("INSERT INTO t (a, b, c)", &ragged, ""))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_file_without_gavel_tables_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path).unwrap();
        let e = open(&path, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("no gavel tables"), "{e}");
        let e = open(&dir.path().join("absent.db"), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }
}
