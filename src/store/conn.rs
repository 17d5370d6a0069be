//! The one bridge between the store core and sqlx: statements are run with
//! their parameters as [`Arg`] values and rows are read through
//! [`Columns`], both implemented once for every sqlx connection, so the
//! core never names a backend. Placeholders are `$1`, `$2`, …, which
//! SQLite and PostgreSQL both understand.

use super::StoreError;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};
use std::future::Future;

/// A value bound to one statement parameter, in the order the statement
/// numbers them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

impl<'a> Arg<'a> {
    pub(crate) fn opt(s: &'a Option<String>) -> Arg<'a> {
        Arg::OptText(s.as_deref())
    }
}

/// Reading a row by column name.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    /// A boolean: `BOOLEAN` on PostgreSQL, `INTEGER` 0/1 on SQLite.
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.try_get(col)?)
    }
}

/// How many rows a statement changed: sqlx gives each database's result
/// type this count, but no trait for it.
pub(crate) trait RowsChanged {
    fn changed(&self) -> u64;
}

impl RowsChanged for sqlx::sqlite::SqliteQueryResult {
    fn changed(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsChanged for sqlx::postgres::PgQueryResult {
    fn changed(&self) -> u64 {
        self.rows_affected()
    }
}

/// A connection (or a transaction's connection) the core runs statements on.
pub(crate) trait Conn: Send {
    type Row: Columns + Send;

    /// Runs a statement; the number of rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send + 'a;

    fn fetch_optional<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> + Send + 'a;

    /// `head VALUES (…), (…) tail` as one statement, returning what `tail`
    /// asks for (`RETURNING …`).
    fn insert_rows<'a>(
        &'a mut self,
        head: &'static str,
        rows: &'a [Vec<Arg<'a>>],
        tail: &'static str,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send + 'a;
}

/// Binds one argument with `$method` (`bind` on a query, `push_bind` on
/// a row of a query builder).
macro_rules! bind_arg {
    ($target:expr, $method:ident, $arg:expr) => {
        match *$arg {
            Arg::Text(v) => $target.$method(v),
            Arg::OptText(v) => $target.$method(v),
            Arg::Int(v) => $target.$method(v),
            Arg::OptInt(v) => $target.$method(v),
            Arg::Bool(v) => $target.$method(v),
        }
    };
}

/// A query for `sql` with every argument bound, in order.
macro_rules! bound {
    ($sql:expr, $args:expr) => {{
        let mut q = sqlx::query($sql);
        for a in $args {
            q = bind_arg!(q, bind, a);
        }
        q
    }};
}

impl<C> Conn for C
where
    C: sqlx::Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    <C::Database as Database>::QueryResult: RowsChanged,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<&'q str>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<i64>: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> bool: Encode<'q, C::Database> + Type<C::Database>,
    <C::Database as Database>::Row: Columns,
{
    type Row = <C::Database as Database>::Row;

    async fn execute<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> Result<u64, StoreError> {
        Ok(bound!(sql, args).execute(&mut *self).await?.changed())
    }

    async fn fetch_all<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> Result<Vec<Self::Row>, StoreError> {
        Ok(bound!(sql, args).fetch_all(&mut *self).await?)
    }

    async fn fetch_optional<'a>(
        &'a mut self,
        sql: &'static str,
        args: &'a [Arg<'a>],
    ) -> Result<Option<Self::Row>, StoreError> {
        Ok(bound!(sql, args).fetch_optional(&mut *self).await?)
    }

    async fn insert_rows<'a>(
        &'a mut self,
        head: &'static str,
        rows: &'a [Vec<Arg<'a>>],
        tail: &'static str,
    ) -> Result<Vec<Self::Row>, StoreError> {
        let mut qb = QueryBuilder::<C::Database>::new(head);
        qb.push_values(rows, |mut b, row| {
            for a in row {
                bind_arg!(b, push_bind, a);
            }
        });
        qb.push(tail);
        Ok(qb.build().fetch_all(&mut *self).await?)
    }
}
