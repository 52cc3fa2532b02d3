//! The guard in front of operators' PostgreSQL databases.
//!
//! Plugins send SQL text; before the host runs it, the guard parses it with
//! sqlparser's PostgreSQL dialect and refuses anything that is not a plain
//! read (or, on the write path, one plain UPDATE). A word scanner is not
//! enough: `SET statement_timeout = 0`, `COMMIT` (which ends a READ ONLY
//! transaction) and functions such as `pg_read_file`, `pg_sleep`,
//! `query_to_xml`, `dblink`, `set_config` or `nextval` must be found wherever
//! they sit in the tree, so the guard walks the AST with sqlparser's visitor
//! and checks every node kind that can carry a call.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, Ident, ObjectName, ObjectNamePart, OrderByExpr, OrderBySort,
    Query, Select, SetExpr, Statement, TableFactor, Update, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Why a statement was refused, for the plugin's error and the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Most bytes of SQL text the guard parses.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// How deep the parser may recurse (nested parentheses, subqueries):
/// sqlparser's default, far above what doctor's queries need.
const MAX_PARSE_DEPTH: usize = 50;

/// How deep the walk may go through expressions and queries. The parser's
/// limit does not cover left-deep chains such as `1 + 1 + 1 + …`, which it
/// builds in a loop; this one bounds the recursive walk (about 15 KiB a
/// level in a debug build).
const MAX_TREE_DEPTH: usize = 500;

/// Stack of the guard's thread. The worst text of 64 KiB measured needs
/// about 2 MiB in a release build and 7.5 MiB in a debug one; only the pages
/// touched are ever committed.
const GUARD_STACK_BYTES: usize = 32 * 1024 * 1024;

/// Functions a doctor query may call: pure reads of values, no side effects,
/// no unbounded sleep, no file or network access, no SQL-in-a-string.
/// Sorted, for `binary_search`. It also holds SQL keywords that sqlparser
/// parses as calls (`ARRAY(SELECT …)`, `ROW(…)`, `CURRENT_USER`, `USER`).
/// `current_setting` is deliberately absent: custom settings can hold secrets
/// (PostgREST keeps `app.jwt_secret` there).
const ALLOWED_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array",
    "array_agg",
    "array_append",
    "array_length",
    "array_lower",
    "array_position",
    "array_remove",
    "array_to_string",
    "array_upper",
    "ascii",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "current_catalog",
    "current_database",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "date_part",
    "date_trunc",
    "dense_rank",
    "div",
    "every",
    "extract",
    "first_value",
    "floor",
    "format",
    "format_type",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "has_column_privilege",
    "has_table_privilege",
    "initcap",
    "isfinite",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_extract_path",
    "json_extract_path_text",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_object_keys",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_interval",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "localtime",
    "localtimestamp",
    "lower",
    "lpad",
    "ltrim",
    "make_interval",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "octet_length",
    "pg_typeof",
    "position",
    "power",
    "quote_ident",
    "quote_literal",
    "rank",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "replace",
    "reverse",
    "right",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "session_user",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "timezone",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "user",
];

/// Allowed names that PostgreSQL treats as syntax rather than as a lookup in
/// pg_catalog. Written quoted (`"coalesce"(…)`) they are ordinary function
/// names that pg_catalog may not hold, so the call could reach a user
/// function of that name: refused when quoted.
const KEYWORD_FUNCTIONS: &[&str] = &[
    "array",
    "coalesce",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "extract",
    "greatest",
    "least",
    "localtime",
    "localtimestamp",
    "nullif",
    "row",
    "session_user",
    "trim",
    "user",
];

/// What the plugin is told may be called, in every function refusal.
const ALLOWED_HINT: &str = "(allowed: see docs/security.md)";

/// One read-only query: SELECT / WITH … SELECT / VALUES / TABLE, nothing else.
pub fn check_read(sql: &str) -> Result<(), Refused> {
    on_guard_stack(sql, read)
}

/// The body of [`check_read`], run on the guard's own stack.
fn read(sql: &str) -> Result<(), Refused> {
    let statement = parse_one(sql)?;
    match &statement {
        Statement::Query(query) => walk(query.as_ref()),
        _ => Err(not_allowed(
            sql,
            "a read-only query (SELECT, WITH … SELECT, VALUES)",
        )),
    }
}

/// The table an UPDATE writes, as written (schema optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateTarget {
    pub schema: Option<String>,
    pub table: String,
}

/// Exactly one UPDATE of one plain table (no FROM, no RETURNING, no WITH),
/// whose expressions pass the same checks as a read.
pub fn check_update(sql: &str) -> Result<UpdateTarget, Refused> {
    on_guard_stack(sql, update)
}

/// The body of [`check_update`], run on the guard's own stack.
fn update(sql: &str) -> Result<UpdateTarget, Refused> {
    let statement = parse_one(sql)?;
    let update = match &statement {
        Statement::Update(update) => update,
        // sqlparser parses `WITH … UPDATE` as a query whose body is the UPDATE.
        Statement::Query(query) if matches!(*query.body, SetExpr::Update(_)) => {
            return Err(refused("WITH … UPDATE is not allowed: send a plain UPDATE"));
        }
        _ => return Err(not_allowed(sql, "one plain UPDATE")),
    };
    let target = update_target(update)?;
    check_update_clauses(update)?;
    for assignment in &update.assignments {
        walk(&assignment.value)?;
    }
    if let Some(selection) = &update.selection {
        walk(selection)?;
    }
    Ok(target)
}

/// Runs `check` on a thread of its own with a stack of known size. Parsing,
/// walking and dropping a syntax tree all recurse; the parser's depth limit
/// does not bound left-deep chains (`1 + 1 + …`, 32,000 deep in 64 KiB), and
/// the caller's stack may be small (2 MiB for a Tokio worker; debug builds
/// use far bigger frames). A panic inside sqlparser becomes a refusal too.
fn on_guard_stack<T: Send>(sql: &str, check: fn(&str) -> Result<T, Refused>) -> Result<T, Refused> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(refused(format!(
            "SQL text is {} bytes, more than the {MAX_SQL_BYTES} allowed",
            sql.len()
        )));
    }
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("sql-guard".to_string())
            .stack_size(GUARD_STACK_BYTES)
            .spawn_scoped(scope, || check(sql))
            .map_err(|err| refused(format!("cannot start the SQL guard: {err}")))?;
        worker
            .join()
            .unwrap_or_else(|_| Err(refused("the SQL guard failed on this text")))
    })
}

fn refused(message: impl Into<String>) -> Refused {
    Refused(message.into())
}

/// Parses `sql` into exactly one statement, within the depth limit.
fn parse_one(sql: &str) -> Result<Statement, Refused> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(cannot_parse)?;
    check_string_literals(&tokens)?;
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(MAX_PARSE_DEPTH)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(cannot_parse)?;
    match statements.len() {
        1 => statements.pop().ok_or_else(|| refused("no statement")),
        n => Err(refused(format!("expected exactly one statement, got {n}"))),
    }
}

fn cannot_parse(err: impl std::fmt::Display) -> Refused {
    refused(format!("cannot parse: {err}"))
}

/// With `standard_conforming_strings = off`, a server setting the guard
/// cannot see, PostgreSQL reads `\'` inside '…' as a quote: the string would
/// end elsewhere than sqlparser ends it and could hide SQL from the guard.
/// E'…' and $$…$$ strings read the same either way.
fn check_string_literals(tokens: &[TokenWithSpan]) -> Result<(), Refused> {
    let backslash = tokens.iter().any(|token| match &token.token {
        Token::SingleQuotedString(text) | Token::NationalStringLiteral(text) => text.contains('\\'),
        _ => false,
    });
    if backslash {
        return Err(refused(
            "a backslash in a '…' string is not allowed in a doctor query \
             (its meaning depends on standard_conforming_strings): write E'…' instead",
        ));
    }
    Ok(())
}

/// The refusal for a statement of the wrong kind, named by its first word
/// (taken from the tokens, since displaying a deep tree could overflow).
fn not_allowed(sql: &str, wanted: &str) -> Refused {
    let first_word = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()
        .and_then(|tokens| {
            tokens.into_iter().find_map(|token| match token {
                Token::Word(word) => Some(word.value.to_uppercase()),
                _ => None,
            })
        })
        .unwrap_or_else(|| "this statement".to_string());
    refused(format!("only {wanted} is allowed, not {first_word}"))
}

/// Walks `node` with the read checks; the first refusal stops the walk.
fn walk<N: Visit>(node: &N) -> Result<(), Refused> {
    let mut sources = FunctionSources::default();
    if node.visit(&mut sources).is_break() {
        return Err(refused(format!(
            "query nested more than {MAX_TREE_DEPTH} levels deep"
        )));
    }
    let mut guard = ReadGuard {
        depth: 0,
        sources: sources.found,
    };
    match node.visit(&mut guard) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(refusal) => Err(refusal),
    }
}

/// The visitor behind every read check: the current depth, and the FROM
/// items of the statement that are function calls.
struct ReadGuard {
    depth: usize,
    sources: Vec<FunctionSource>,
}

/// A function call in FROM, by the name a query refers to it with (its
/// alias, or the function's own name), and the columns it has by that name
/// (those its alias declares; else one named like it, and `ordinality`).
struct FunctionSource {
    name: String,
    columns: Vec<String>,
}

/// Collects the [`FunctionSource`]s of a statement, at any depth (a name
/// may be reused at several levels: every source of that name must have
/// the column). Stops, like the guard, past the depth limit.
#[derive(Default)]
struct FunctionSources {
    found: Vec<FunctionSource>,
    depth: usize,
}

impl Visitor for FunctionSources {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let (alias, called) = match factor {
            TableFactor::Table {
                name,
                alias,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, alias, .. } => {
                (alias, name.0.last().and_then(|p| p.as_ident()).map(fold))
            }
            TableFactor::UNNEST { alias, .. } => (alias, Some("unnest".to_string())),
            _ => return ControlFlow::Continue(()),
        };
        let name = alias.as_ref().map(|a| fold(&a.name)).or(called);
        let declared: Vec<String> = alias
            .iter()
            .flat_map(|a| a.columns.iter().map(|c| fold(&c.name)))
            .collect();
        if let Some(name) = name {
            let columns = match declared.is_empty() {
                true => vec![name.clone(), "ordinality".to_string()],
                false => declared,
            };
            self.found.push(FunctionSource { name, columns });
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.leave()
    }
}

impl FunctionSources {
    fn enter(&mut self) -> ControlFlow<()> {
        self.depth += 1;
        match self.depth > MAX_TREE_DEPTH {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

impl ReadGuard {
    /// PostgreSQL reads a qualified name `q.n` whose `n` is not a column of
    /// `q` as the call `n(q)`. A table's row fits only functions made for it
    /// (the operator's own: the role is their bound), but a function in
    /// FROM yields a plain value that any one-argument function takes:
    /// `g.pg_sleep FROM generate_series(5, 5) g` sleeps. So a name on a
    /// function source must be one of its columns, and a third part (read as
    /// `table.column.f`, the call `f(table.column)`) is refused.
    fn check_qualified(&self, parts: &[&Ident]) -> Result<(), Refused> {
        let shown = || parts.iter().map(|p| fold(p)).collect::<Vec<_>>().join(".");
        if parts.len() > 2 {
            return Err(refused(format!(
                "the name {} is not allowed in a doctor query: write table.column \
                 (PostgreSQL may read a third part as a function call)",
                shown()
            )));
        }
        let [qualifier, name] = parts else {
            return Ok(());
        };
        let (qualifier, name) = (fold(qualifier), fold(name));
        let not_a_column = self
            .sources
            .iter()
            .any(|s| s.name == qualifier && !s.columns.contains(&name));
        if not_a_column {
            return Err(refused(format!(
                "{qualifier}.{name} is not allowed in a doctor query: {qualifier} is a function \
                 in FROM without a column {name}, and PostgreSQL would read it as the call \
                 {name}({qualifier}) (name its columns: AS {qualifier}(column, …))"
            )));
        }
        Ok(())
    }

    /// The plain dotted name an expression is, if it is one (`t.col`, and
    /// the name part of `t.col[1]`, which sqlparser keeps apart).
    fn check_names(&self, expr: &Expr) -> Result<(), Refused> {
        match expr {
            Expr::CompoundIdentifier(parts) => {
                self.check_qualified(&parts.iter().collect::<Vec<_>>())
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                let mut parts: Vec<&Ident> = match root.as_ref() {
                    Expr::Identifier(ident) => vec![ident],
                    Expr::CompoundIdentifier(idents) => idents.iter().collect(),
                    _ => return Ok(()),
                };
                parts.extend(access_chain.iter().map_while(|access| match access {
                    AccessExpr::Dot(Expr::Identifier(ident)) => Some(ident),
                    _ => None,
                }));
                self.check_qualified(&parts)
            }
            _ => Ok(()),
        }
    }
}

impl ReadGuard {
    fn descend(&mut self) -> ControlFlow<Refused> {
        self.depth += 1;
        if self.depth > MAX_TREE_DEPTH {
            return ControlFlow::Break(refused(format!(
                "query nested more than {MAX_TREE_DEPTH} levels deep"
            )));
        }
        ControlFlow::Continue(())
    }

    fn ascend(&mut self) -> ControlFlow<Refused> {
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

impl Visitor for ReadGuard {
    type Break = Refused;

    // The top statement is never walked (callers walk its query or
    // expressions), so any statement met here is nested in a query: an
    // INSERT, UPDATE, DELETE or MERGE body.
    fn pre_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<Refused> {
        ControlFlow::Break(refused(
            "a data-modifying statement inside a query is not allowed",
        ))
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refused> {
        self.descend()?;
        into_flow(check_query(query))
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Refused> {
        self.ascend()
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Refused> {
        into_flow(check_select(select))
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Refused> {
        into_flow(check_table_factor(factor))
    }

    fn pre_visit_order_by_expr(&mut self, order_by: &OrderByExpr) -> ControlFlow<Refused> {
        into_flow(check_order_by(order_by))
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Refused> {
        self.descend()?;
        into_flow(self.check_names(expr).and_then(|()| check_expr(expr)))
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Refused> {
        self.ascend()
    }
}

fn into_flow(result: Result<(), Refused>) -> ControlFlow<Refused> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(refusal) => ControlFlow::Break(refusal),
    }
}

/// The clauses of one query level; its parts are walked separately.
fn check_query(query: &Query) -> Result<(), Refused> {
    if let Some(verb) = data_modifying_verb(&query.body) {
        return Err(refused(format!(
            "data-modifying {verb} is not allowed in a doctor query"
        )));
    }
    if let Some(lock) = query.locks.first() {
        return Err(refused(format!(
            "locking clause {lock} is not allowed in a doctor query"
        )));
    }
    // Clauses of other dialects: PostgreSQL would reject them anyway.
    if query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(refused("clause not supported by PostgreSQL"));
    }
    Ok(())
}

fn data_modifying_verb(body: &SetExpr) -> Option<&'static str> {
    match body {
        SetExpr::Insert(_) => Some("INSERT"),
        SetExpr::Update(_) => Some("UPDATE"),
        SetExpr::Delete(_) => Some("DELETE"),
        SetExpr::Merge(_) => Some("MERGE"),
        SetExpr::Select(_)
        | SetExpr::Query(_)
        | SetExpr::SetOperation { .. }
        | SetExpr::Values(_)
        | SetExpr::Table(_) => None,
    }
}

fn check_select(select: &Select) -> Result<(), Refused> {
    if select.into.is_some() {
        // SELECT … INTO creates a table.
        return Err(refused("SELECT … INTO is not allowed in a doctor query"));
    }
    Ok(())
}

/// `ORDER BY x USING op` names an operator, which may be a user's.
fn check_order_by(order_by: &OrderByExpr) -> Result<(), Refused> {
    match &order_by.options.sort {
        Some(OrderBySort::Using(op)) => Err(refused(format!(
            "ORDER BY … USING {op} is not allowed in a doctor query"
        ))),
        _ => Ok(()),
    }
}

/// FROM items: plain tables, subqueries and joins pass; table functions must
/// be allowed functions; exotic table sources are refused whole.
fn check_table_factor(factor: &TableFactor) -> Result<(), Refused> {
    match factor {
        // `FROM generate_series(1, 3)` is a table with arguments.
        TableFactor::Table { name, args, .. } => match args {
            Some(_) => check_function_name(name),
            None => Ok(()),
        },
        TableFactor::Function { name, .. } => check_function_name(name),
        // The arguments of these are expressions, walked on their own.
        TableFactor::Derived { .. }
        | TableFactor::NestedJoin { .. }
        | TableFactor::UNNEST { .. } => Ok(()),
        // XMLTABLE, JSON_TABLE and other dialects' sources: not needed by
        // doctor and each carries its own little language.
        TableFactor::TableFunction { .. }
        | TableFactor::JsonTable { .. }
        | TableFactor::OpenJsonTable { .. }
        | TableFactor::Pivot { .. }
        | TableFactor::Unpivot { .. }
        | TableFactor::UnpivotExpr { .. }
        | TableFactor::MatchRecognize { .. }
        | TableFactor::XmlTable { .. }
        | TableFactor::SemanticView { .. } => Err(refused(
            "this FROM item (XMLTABLE, JSON_TABLE, PIVOT, …) is not allowed in a doctor query",
        )),
    }
}

/// One expression node; its children are walked on their own. The match has
/// no wildcard so that a new sqlparser variant fails to compile here.
fn check_expr(expr: &Expr) -> Result<(), Refused> {
    match expr {
        Expr::Function(function) => check_function_name(&function.name),
        Expr::BinaryOp { op, .. }
        | Expr::AnyOp { compare_op: op, .. }
        | Expr::AllOp { compare_op: op, .. } => check_operator(op),
        Expr::CompoundFieldAccess { root, access_chain } => check_field_access(root, access_chain),
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::IsJson { .. }
        | Expr::IsNormalized { .. }
        | Expr::In { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::SimilarTo { .. }
        | Expr::UnaryOp { .. }
        | Expr::Cast { .. }
        | Expr::AtTimeZone { .. }
        | Expr::Extract { .. }
        | Expr::Ceil { .. }
        | Expr::Floor { .. }
        | Expr::Position { .. }
        | Expr::Substring { .. }
        | Expr::Trim { .. }
        | Expr::Overlay { .. }
        | Expr::Collate { .. }
        | Expr::Nested(_)
        | Expr::Value(_)
        | Expr::TypedString(_)
        | Expr::Case { .. }
        | Expr::Exists { .. }
        | Expr::Subquery(_)
        | Expr::GroupingSets(_)
        | Expr::Cube(_)
        | Expr::Rollup(_)
        | Expr::Tuple(_)
        | Expr::Array(_)
        | Expr::Interval(_)
        | Expr::Wildcard(_)
        | Expr::QualifiedWildcard(..) => Ok(()),
        // Other dialects' syntax; PostgreSQL has none of it.
        Expr::JsonAccess { .. }
        | Expr::RLike { .. }
        | Expr::Convert { .. }
        | Expr::Prefixed { .. }
        | Expr::Struct { .. }
        | Expr::Named { .. }
        | Expr::Dictionary(_)
        | Expr::Map(_)
        | Expr::MatchAgainst { .. }
        | Expr::OuterJoin(_)
        | Expr::Prior(_)
        | Expr::Lambda(_)
        | Expr::MemberOf(_) => Err(refused(
            "expression syntax not supported by PostgreSQL is not allowed in a doctor query",
        )),
    }
}

/// `OPERATOR(schema.op)` and unknown operators may run user functions.
fn check_operator(op: &BinaryOperator) -> Result<(), Refused> {
    match op {
        BinaryOperator::Custom(_) | BinaryOperator::PGCustomBinaryOperator(_) => Err(refused(
            format!("operator {op} is not allowed in a doctor query"),
        )),
        _ => Ok(()),
    }
}

/// A call is allowed when its name is on the allowlist, unqualified or
/// qualified by pg_catalog; any other schema may hold a user function, which
/// can do anything.
fn check_function_name(name: &ObjectName) -> Result<(), Refused> {
    let idents = plain_idents(name)?;
    if function_allowed(&idents) {
        return Ok(());
    }
    let shown = idents
        .iter()
        .map(|ident| fold(ident))
        .collect::<Vec<_>>()
        .join(".");
    Err(refused(format!(
        "function {shown} is not allowed in a doctor query {ALLOWED_HINT}"
    )))
}

/// Whether the function named by `idents` is on the allowlist. A quoted
/// keyword is not: `"coalesce"` names whatever function has that name.
fn function_allowed(idents: &[&Ident]) -> bool {
    let function = match idents {
        [function] => function,
        [schema, function] if fold(schema) == "pg_catalog" => function,
        _ => return false,
    };
    let folded = fold(function);
    let quoted_keyword =
        function.quote_style.is_some() && KEYWORD_FUNCTIONS.contains(&folded.as_str());
    ALLOWED_FUNCTIONS.binary_search(&folded.as_str()).is_ok() && !quoted_keyword
}

/// PostgreSQL reads a field selection `(x).f` as the call `f(x)` when `x` has
/// no field `f`: `('/etc/passwd'::text).pg_read_file` reads the file. So a
/// selected field must bear the name of an allowed function. Dots that only
/// continue a plain dotted name (`t.col[1]`, which sqlparser also puts here)
/// are name parts: like `t.col` they resolve to a column or, failing that, to
/// a function of the whole table row; the built-in functions that take a row
/// (`row_to_json`, `pg_typeof`, `num_nulls`, …) have no effects.
fn check_field_access(root: &Expr, chain: &[AccessExpr]) -> Result<(), Refused> {
    let name_parts = match root {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => chain
            .iter()
            .take_while(|access| matches!(access, AccessExpr::Dot(Expr::Identifier(_))))
            .count(),
        _ => 0,
    };
    chain
        .iter()
        .skip(name_parts)
        .try_for_each(check_field_selection)
}

fn check_field_selection(access: &AccessExpr) -> Result<(), Refused> {
    match access {
        AccessExpr::Subscript(_) => Ok(()),
        AccessExpr::Dot(Expr::Identifier(field)) if function_allowed(&[field]) => Ok(()),
        AccessExpr::Dot(Expr::Identifier(field)) => Err(refused(format!(
            "field selection .{0} is not allowed in a doctor query: \
             PostgreSQL may read (x).{0} as the call {0}(x)",
            fold(field)
        ))),
        AccessExpr::Dot(_) => Err(refused(
            "this field selection is not allowed in a doctor query",
        )),
    }
}

/// The parts of a name, refusing dialect-specific computed parts.
fn plain_idents(name: &ObjectName) -> Result<Vec<&Ident>, Refused> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(ident),
            ObjectNamePart::Function(_) => {
                Err(refused("computed names are not allowed in a doctor query"))
            }
        })
        .collect()
}

/// PostgreSQL's identifier rule: unquoted names fold to lower case (ASCII
/// only, as in a UTF-8 database), quoted ones stay as written.
fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// The target of a plain UPDATE: one table, maybe aliased, nothing else.
fn update_target(update: &Update) -> Result<UpdateTarget, Refused> {
    if !update.table.joins.is_empty() {
        return Err(refused("UPDATE of a join is not allowed"));
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_directives,
        inheritance,
    } = &update.table.relation
    else {
        return Err(refused("UPDATE must name one plain table"));
    };
    if inheritance.is_some() {
        // ONLY / `*` change which tables are written; doctor never needs them.
        return Err(refused("UPDATE ONLY or UPDATE table * is not allowed"));
    }
    if !with_hints.is_empty()
        || !partitions.is_empty()
        || !index_directives.is_empty()
        || alias
            .as_ref()
            .is_some_and(|alias| !alias.columns.is_empty())
    {
        return Err(refused("UPDATE must name one plain table"));
    }
    target_from_name(name)
}

fn target_from_name(name: &ObjectName) -> Result<UpdateTarget, Refused> {
    match plain_idents(name)?.as_slice() {
        [table] => Ok(UpdateTarget {
            schema: None,
            table: fold(table),
        }),
        [schema, table] => Ok(UpdateTarget {
            schema: Some(fold(schema)),
            table: fold(table),
        }),
        _ => Err(refused(
            "UPDATE target must be table or schema.table, not a longer name",
        )),
    }
}

/// Clauses beyond `UPDATE t SET … WHERE …`. FROM would join other tables
/// into the write and RETURNING would turn it into a read: the write path
/// takes neither.
fn check_update_clauses(update: &Update) -> Result<(), Refused> {
    if update.from.is_some() {
        return Err(refused("UPDATE … FROM is not allowed"));
    }
    if update.returning.is_some() || update.output.is_some() {
        return Err(refused("UPDATE … RETURNING is not allowed"));
    }
    // Other dialects' clauses; PostgreSQL would reject them anyway.
    if update.or.is_some()
        || update.limit.is_some()
        || update.settings.is_some()
        || update.on_cluster.is_some()
        || !update.order_by.is_empty()
        || !update.optimizer_hints.is_empty()
    {
        return Err(refused("UPDATE clause not supported by PostgreSQL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `check_read` refuses `sql` with a message containing `why`.
    fn refuses_read(sql: &str, why: &str) {
        match check_read(sql) {
            Ok(()) => panic!("accepted: {sql}"),
            Err(Refused(message)) => {
                assert!(
                    message.contains(why),
                    "{sql}\n  refused with: {message}\n  expected: {why}"
                )
            }
        }
    }

    fn refuses_update(sql: &str, why: &str) {
        match check_update(sql) {
            Ok(target) => panic!("accepted: {sql} -> {target:?}"),
            Err(Refused(message)) => {
                assert!(
                    message.contains(why),
                    "{sql}\n  refused with: {message}\n  expected: {why}"
                )
            }
        }
    }

    fn accepts_read(sql: &str) {
        if let Err(Refused(message)) = check_read(sql) {
            panic!("refused: {sql}\n  with: {message}");
        }
    }

    fn target(schema: Option<&str>, table: &str) -> UpdateTarget {
        UpdateTarget {
            schema: schema.map(str::to_string),
            table: table.to_string(),
        }
    }

    fn sleeps(sql: &str) {
        refuses_read(sql, "function pg_sleep is not allowed");
    }

    #[test]
    fn accepts_what_the_database_plugins_send() {
        for sql in [
            r#"SELECT "id", "status"::text, "worker", EXTRACT(EPOCH FROM "started_at") FROM "jobs" WHERE "status" = ANY($1) ORDER BY "id" LIMIT 200"#,
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 AND (SELECT attname FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) = $2",
            "SELECT j.id, (SELECT w.pid FROM workers w WHERE w.id = j.worker_id) AS pid, attempted_by[array_upper(attempted_by, 1)] FROM oban_jobs j WHERE j.state = 'executing' AND j.attempted_at < now() - interval '5 minutes'",
            "WITH c AS (SELECT status, count(*) AS n FROM chunks GROUP BY status) SELECT * FROM c",
            "SELECT coalesce(split_part(locked_by, ':', 2), '')::bigint FROM jobs WHERE locked_by IS NOT DISTINCT FROM $1",
        ] {
            accepts_read(sql);
        }
    }

    #[test]
    fn accepts_special_syntax_that_is_not_a_function_call() {
        for sql in [
            "SELECT CURRENT_TIMESTAMP, current_date, current_time, localtime, localtimestamp",
            "SELECT current_user, session_user, user, current_schema, current_catalog, current_role",
            "SELECT SUBSTRING(x FROM 1 FOR 2), POSITION('a' IN x), TRIM(BOTH 'x' FROM y) FROM t",
            "SELECT OVERLAY(x PLACING 'y' FROM 1 FOR 2), CEIL(x), FLOOR(x), x AT TIME ZONE 'UTC' FROM t",
            "SELECT ARRAY[1, 2], ARRAY(SELECT id FROM jobs), ROW(1, 2), (1, 2)",
            "SELECT x COLLATE \"C\", 'jobs'::regclass, CAST(x AS int), regclass 'jobs' FROM t",
            "SELECT x[1:2], t.a[1], t.a[1][2:3], a ->> 'k', a @> b, a #>> '{k}' FROM t",
            "SELECT CASE WHEN a THEN 1 ELSE 2 END, a BETWEEN 1 AND 2, a LIKE 'x%', a ~ 'y' FROM t",
            "SELECT x IS NFC NORMALIZED, x IS JSON, x IS TRUE, -x, NOT x FROM t",
            "SELECT count(*) FILTER (WHERE ok), string_agg(x, ',' ORDER BY y) FROM t",
            "SELECT row_number() OVER w, lag(x) OVER (PARTITION BY y ORDER BY z) FROM t WINDOW w AS (ORDER BY x)",
            "SELECT DISTINCT ON (a) a FROM t WHERE a = ALL(ARRAY[1]) AND EXISTS (SELECT 1) LIMIT ALL",
            "SELECT pg_catalog.lower(x), PG_CATALOG.upper(x), \"lower\"(x), \"pg_catalog\".now()",
            "SELECT * FROM generate_series(1, 3) WITH ORDINALITY g, LATERAL unnest(ARRAY[1]) u",
            "SELECT * FROM jobs j JOIN LATERAL (SELECT count(*) FROM w WHERE w.j = j.id) s ON true",
            "SELECT * FROM jsonb_each('{}'::jsonb) e, ONLY jobs",
            "SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3 INTERSECT VALUES (4)",
            "VALUES (1, 'a'), (2, 'b')",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
            "SELECT * FROM t TABLESAMPLE BERNOULLI (10)",
            "SELECT 1 FETCH FIRST 3 ROWS ONLY",
            "SELECT 1;",
        ] {
            accepts_read(sql);
        }
    }

    #[test]
    fn refuses_anything_but_one_statement() {
        refuses_read(
            "SELECT 1; SELECT 2",
            "expected exactly one statement, got 2",
        );
        refuses_read("COMMIT; UPDATE jobs SET status = 'x'", "got 2");
        refuses_read("", "got 0");
        refuses_read("-- nothing", "got 0");
    }

    #[test]
    fn refuses_statements_that_are_not_reads() {
        for (sql, kind) in [
            ("SET statement_timeout = 0", "not SET"),
            ("set local statement_timeout to 0", "not SET"),
            ("COMMIT", "not COMMIT"),
            ("ROLLBACK", "not ROLLBACK"),
            ("EXPLAIN ANALYZE SELECT 1", "not EXPLAIN"),
            ("COPY jobs TO '/tmp/x'", "not COPY"),
            ("CALL p()", "not CALL"),
            ("DELETE FROM jobs", "not DELETE"),
            ("INSERT INTO jobs VALUES (1)", "not INSERT"),
            ("UPDATE jobs SET status = 'x'", "not UPDATE"),
            ("/* hi */ TRUNCATE jobs", "not TRUNCATE"),
            ("LISTEN x", "not LISTEN"),
        ] {
            refuses_read(sql, kind);
            refuses_read(sql, "only a read-only query");
        }
        // sqlparser has no DO; a parse error is refusal enough.
        refuses_read("DO $$ BEGIN END $$", "cannot parse: ");
    }

    #[test]
    fn refuses_data_modifying_queries() {
        refuses_read(
            "WITH x AS (UPDATE jobs SET status = 'x' RETURNING 1) SELECT * FROM x",
            "data-modifying UPDATE",
        );
        refuses_read(
            "WITH x AS (DELETE FROM jobs RETURNING 1) SELECT 1",
            "data-modifying DELETE",
        );
        refuses_read(
            "WITH x AS (INSERT INTO jobs VALUES (1) RETURNING 1) SELECT 1",
            "data-modifying INSERT",
        );
        refuses_read(
            "WITH a AS (WITH b AS (DELETE FROM jobs RETURNING 1) SELECT * FROM b) SELECT * FROM a",
            "data-modifying DELETE",
        );
        refuses_read(
            "WITH y AS (SELECT 1) UPDATE a SET x = 1",
            "data-modifying UPDATE",
        );
        refuses_read(
            "WITH y AS (SELECT 1) DELETE FROM a",
            "data-modifying DELETE",
        );
        refuses_read("SELECT * INTO newtable FROM jobs", "SELECT … INTO");
        refuses_read("SELECT x INTO TEMP t FROM jobs", "SELECT … INTO");
    }

    #[test]
    fn refuses_locking_clauses() {
        refuses_read("SELECT * FROM jobs FOR UPDATE", "locking clause FOR UPDATE");
        refuses_read("SELECT * FROM jobs FOR SHARE", "locking clause FOR SHARE");
        refuses_read(
            "SELECT * FROM (SELECT * FROM jobs FOR UPDATE SKIP LOCKED) j",
            "locking clause FOR UPDATE",
        );
        refuses_read(
            "WITH j AS (SELECT * FROM jobs FOR UPDATE) SELECT * FROM j",
            "locking clause",
        );
        // sqlparser 0.64 cannot parse these two; refused all the same.
        refuses_read("SELECT * FROM jobs FOR NO KEY UPDATE", "cannot parse");
        refuses_read("SELECT * FROM jobs FOR KEY SHARE", "cannot parse");
    }

    #[test]
    fn refuses_dangerous_functions() {
        assert_eq!(
            check_read("SELECT pg_sleep(1e9)"),
            Err(Refused(
                "function pg_sleep is not allowed in a doctor query (allowed: see docs/security.md)"
                    .to_string()
            ))
        );
        for name in [
            "pg_sleep",
            "pg_sleep_for",
            "pg_sleep_until",
            "pg_read_file",
            "pg_read_binary_file",
            "pg_ls_dir",
            "pg_stat_file",
            "lo_import",
            "lo_export",
            "lo_get",
            "lo_open",
            "dblink",
            "dblink_exec",
            "set_config",
            "current_setting",
            "query_to_xml",
            "query_to_json",
            "cursor_to_xml",
            "nextval",
            "setval",
            "pg_advisory_lock",
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_notify",
            "txid_current",
        ] {
            let why = format!("function {name} is not allowed in a doctor query");
            refuses_read(&format!("SELECT {name}('x')"), &why);
            refuses_read(&format!("SELECT {name}()"), &why);
            refuses_read(&format!("SELECT * FROM {name}('x')"), &why);
        }
        refuses_read(
            "SELECT pg_read_file('/etc/shadow')",
            "function pg_read_file",
        );
        refuses_read(
            "SELECT * FROM pg_read_file('/etc/shadow')",
            "function pg_read_file",
        );
        refuses_read(
            "SELECT set_config('statement_timeout', '0', false)",
            "function set_config",
        );
        refuses_read(
            "SELECT query_to_xml('UPDATE jobs SET status=1', true, true, '')",
            "function query_to_xml",
        );
        refuses_read("SELECT dblink('…', '…')", "function dblink");
        refuses_read("SELECT lo_import('/etc/passwd')", "function lo_import");
        refuses_read("SELECT nextval('s')", "function nextval");
    }

    #[test]
    fn refuses_user_functions_and_other_schemas() {
        refuses_read(
            "SELECT public.cleanup()",
            "function public.cleanup is not allowed",
        );
        refuses_read(
            "SELECT app.cleanup()",
            "function app.cleanup is not allowed",
        );
        refuses_read("SELECT cleanup()", "function cleanup is not allowed");
        refuses_read("SELECT public.lower('x')", "function public.lower");
        refuses_read(
            "SELECT db.pg_catalog.lower('x')",
            "function db.pg_catalog.lower",
        );
        refuses_read(
            "SELECT \"PG_CATALOG\".lower('x')",
            "function PG_CATALOG.lower",
        );
        refuses_read("SELECT * FROM app.report(1)", "function app.report");
        refuses_read(
            "SELECT 1 OPERATOR(public.+) 2",
            "operator OPERATOR(public.+)",
        );
        refuses_read("SELECT a <<->> b FROM t", "operator <<->>");
    }

    #[test]
    fn folds_function_names_like_postgresql() {
        refuses_read(
            "SELECT pg_catalog.pg_sleep(1)",
            "function pg_catalog.pg_sleep is not allowed",
        );
        sleeps("SELECT PG_SLEEP(1)");
        sleeps("SELECT \"pg_sleep\"(1)");
        refuses_read(
            "SELECT \"pg_catalog\".\"pg_sleep\"(1)",
            "function pg_catalog.pg_sleep is not allowed",
        );
        // Quoted names keep their case: "PG_SLEEP" is not pg_sleep but an
        // unknown (user) function, refused under its own name.
        refuses_read("SELECT \"PG_SLEEP\"(1)", "function PG_SLEEP is not allowed");
        refuses_read("SELECT \"LOWER\"('x')", "function LOWER is not allowed");
        // Quoted, a keyword is a plain name that may reach a user function.
        refuses_read(
            "SELECT \"coalesce\"(1, 2)",
            "function coalesce is not allowed",
        );
        refuses_read("SELECT \"array\"(1)", "function array is not allowed");
        accepts_read("SELECT COALESCE(1, 2), Lower('X')");
    }

    #[test]
    fn finds_functions_wherever_they_hide() {
        for sql in [
            "SELECT * FROM jobs WHERE pg_sleep(10) IS NULL",
            "SELECT * FROM jobs ORDER BY pg_sleep(1)",
            "SELECT status FROM jobs GROUP BY status HAVING pg_sleep(1) IS NULL",
            "SELECT status FROM jobs GROUP BY pg_sleep(1)",
            "SELECT * FROM jobs a JOIN jobs b ON pg_sleep(1) IS NULL",
            "SELECT * FROM jobs LIMIT pg_sleep(1)",
            "SELECT * FROM jobs OFFSET pg_sleep(1)",
            "SELECT * FROM jobs LIMIT (SELECT 1 FROM pg_sleep(1))",
            "SELECT CASE WHEN pg_sleep(1) IS NULL THEN 1 END",
            "SELECT CASE x WHEN 1 THEN 2 ELSE pg_sleep(1) END FROM t",
            "VALUES (1), (pg_sleep(1))",
            "SELECT row_number() OVER (ORDER BY pg_sleep(1)) FROM t",
            "SELECT row_number() OVER (PARTITION BY pg_sleep(1)) FROM t",
            "SELECT row_number() OVER w FROM t WINDOW w AS (ORDER BY pg_sleep(1))",
            "SELECT sum(x) OVER (ROWS BETWEEN pg_sleep(1) PRECEDING AND CURRENT ROW) FROM t",
            "SELECT * FROM jobs, LATERAL (SELECT pg_sleep(1)) s",
            "SELECT * FROM jobs JOIN LATERAL pg_sleep(1) s ON true",
            "SELECT * FROM generate_series(1, 2), pg_sleep(1)",
            "WITH a AS (WITH b AS (SELECT pg_sleep(1)) SELECT * FROM b) SELECT * FROM a",
            "WITH a AS (SELECT 1) SELECT * FROM a WHERE EXISTS (SELECT pg_sleep(1))",
            "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM t",
            "SELECT string_agg(x, ',' ORDER BY pg_sleep(1)) FROM t",
            "SELECT max(x) WITHIN GROUP (ORDER BY pg_sleep(1)) FROM t",
            "SELECT x[pg_sleep(1)] FROM t",
            "SELECT x[1:pg_sleep(1)] FROM t",
            "SELECT pg_sleep(1)::text",
            "SELECT CAST(pg_sleep(1) AS text)",
            "SELECT coalesce(pg_sleep(1), 1)",
            "SELECT lower(upper(lower(pg_sleep(1)::text)))",
            "SELECT ARRAY(SELECT pg_sleep(1))",
            "SELECT ARRAY[pg_sleep(1)]",
            "SELECT ROW(pg_sleep(1))",
            "SELECT 1 WHERE 1 IN (SELECT pg_sleep(1))",
            "SELECT 1 WHERE 1 IN (1, pg_sleep(1))",
            "SELECT 1 WHERE 1 = ANY(SELECT pg_sleep(1))",
            "SELECT 1 UNION SELECT pg_sleep(1)",
            "SELECT DISTINCT ON (pg_sleep(1)) 1",
            "SELECT now() AT TIME ZONE pg_sleep(1)::text",
            "SELECT EXTRACT(EPOCH FROM pg_sleep(1))",
            "SELECT SUBSTRING(pg_sleep(1)::text FROM 1 FOR 2)",
            "SELECT TRIM(BOTH pg_sleep(1)::text FROM 'x')",
            "SELECT POSITION('a' IN pg_sleep(1)::text)",
            "SELECT pg_sleep(1) COLLATE \"C\"",
            "SELECT (pg_sleep(1))",
            "SELECT * FROM (SELECT * FROM (SELECT pg_sleep(1)) a) b",
            "SELECT * FROM (jobs JOIN jobs b ON pg_sleep(1) IS NULL)",
            "SELECT jsonb_build_object('k', pg_sleep(1))",
            "SELECT format(fmt => pg_sleep(1)::text)",
            "SELECT * FROM unnest(ARRAY[pg_sleep(1)])",
            "SELECT * FROM generate_series(1, pg_sleep(1)::int)",
        ] {
            sleeps(sql);
        }
        // sqlparser cannot parse ROWS FROM; refused all the same.
        refuses_read("SELECT * FROM ROWS FROM (pg_sleep(1))", "cannot parse");
    }

    #[test]
    fn refuses_names_on_function_sources_that_postgresql_reads_as_calls() {
        // Each was accepted once and did what it says on PostgreSQL 15: a
        // function in FROM yields a plain value, and `alias.f` is `f(alias)`.
        let attacks = [
            (
                "SELECT g.pg_sleep FROM generate_series(5,5) g",
                "g.pg_sleep",
            ),
            (
                "SELECT u.current_setting FROM unnest(ARRAY['app.jwt_secret']) u",
                "u.current_setting",
            ),
            (
                "SELECT l.current_setting FROM lower('server_version') l",
                "l.current_setting",
            ),
            (
                "SELECT g.pg_advisory_lock FROM generate_series(42,42) g",
                "g.pg_advisory_lock",
            ),
            ("SELECT r.nextval FROM to_regclass('s') r", "r.nextval"),
            (
                "SELECT u.pg_read_file FROM unnest(ARRAY['/etc/passwd']) u",
                "u.pg_read_file",
            ),
            (
                "SELECT count(*) FROM generate_series(1,1) g WHERE g.pg_terminate_backend",
                "g.pg_terminate_backend",
            ),
            (
                "SELECT u.ts_stat FROM unnest(ARRAY['SELECT to_tsvector(1)']) u",
                "u.ts_stat",
            ),
            (
                "SELECT unnest.ts_stat FROM unnest(ARRAY['x'])",
                "unnest.ts_stat",
            ),
            (
                "SELECT generate_series.pg_sleep FROM generate_series(1, 1)",
                "generate_series.pg_sleep",
            ),
            (
                "SELECT x.pg_sleep[1] FROM generate_series(1, 1) x",
                "x.pg_sleep",
            ),
        ];
        for (sql, named) in attacks {
            refuses_read(sql, named);
        }
        refuses_update(
            "UPDATE jobs SET status = 'x' WHERE id IN (SELECT r.nextval FROM to_regclass('s') r)",
            "r.nextval",
        );
        // The columns a function source has are fine: its own name, the
        // declared ones, ordinality.
        accepts_read("SELECT g.g FROM generate_series(1, 3) g");
        accepts_read("SELECT u.x, u.n FROM unnest(ARRAY[1, 2]) WITH ORDINALITY AS u(x, n)");
        accepts_read("SELECT g.ordinality FROM generate_series(1, 3) WITH ORDINALITY g");
        refuses_read(
            "SELECT u.pg_sleep FROM unnest(ARRAY[1]) AS u(x)",
            "u.pg_sleep",
        );
    }

    #[test]
    fn refuses_field_selections_postgresql_reads_as_calls() {
        // PostgreSQL runs pg_read_file(x) for each of these.
        refuses_read(
            "SELECT ('/etc/passwd'::text).pg_read_file",
            "field selection .pg_read_file is not allowed",
        );
        refuses_read(
            "SELECT (f.path).pg_read_file FROM files f",
            "field selection .pg_read_file",
        );
        refuses_read(
            "SELECT t.a[1].pg_read_file FROM arrs t",
            "field selection .pg_read_file",
        );
        refuses_read(
            "SELECT a[1].pg_read_file FROM arrs",
            "field selection .pg_read_file",
        );
        refuses_read(
            "SELECT ((1.5)::float8).pg_sleep",
            "field selection .pg_sleep",
        );
        refuses_read("SELECT ('s'::regclass).NEXTVAL", "field selection .nextval");
        refuses_update("UPDATE a SET x = (y).pg_sleep", "field selection .pg_sleep");
        // A real field cannot be told from a call, so it is refused too.
        refuses_read("SELECT (jsonb_each(x)).key FROM t", "field selection .key");
        refuses_read("SELECT (x).f(1)", "field selection");
        // A field named like an allowed function is harmless either way.
        accepts_read("SELECT (x).lower, (t.a[1]).length FROM t");
        // Plain dotted names are table.column. A third part is read as
        // table.column.f, the call f(table.column): refused.
        accepts_read("SELECT t.a, t.a[1] FROM t");
        refuses_read("SELECT s.t.a FROM t", "the name s.t.a is not allowed");
        refuses_read("SELECT t.path.pg_read_file FROM t", "t.path.pg_read_file");
        refuses_read("SELECT s.t.a[1] FROM t", "the name s.t.a");
    }

    #[test]
    fn refuses_backslashes_in_plain_strings() {
        // With standard_conforming_strings = off PostgreSQL reads this as
        // the string 'a'' , ''' followed by a call of pg_sleep.
        refuses_read(
            r"SELECT 'a\' , ''' , pg_sleep(1) -- '",
            "a backslash in a '…' string is not allowed",
        );
        refuses_read(
            r"SELECT regexp_replace(x, '\s', '') FROM t",
            "write E'…' instead",
        );
        refuses_update(r"UPDATE a SET x = N'\'", "a backslash");
        accepts_read(r"SELECT regexp_replace(x, E'\\s', ''), $$\$$, 'it''s' FROM t");
        // An E'…' string ends at the same quote for sqlparser and PostgreSQL.
        accepts_read(r"SELECT E'a\', pg_sleep(10) --'");
    }

    #[test]
    fn refuses_order_by_using_an_operator() {
        refuses_read("SELECT x FROM t ORDER BY x USING >", "ORDER BY … USING >");
        refuses_read(
            "SELECT row_number() OVER (ORDER BY x USING <) FROM t",
            "ORDER BY … USING <",
        );
        refuses_read(
            "SELECT array_agg(x ORDER BY x USING <) FROM t",
            "ORDER BY … USING <",
        );
    }

    #[test]
    fn refuses_exotic_from_items() {
        refuses_read(
            "SELECT * FROM XMLTABLE('/a' PASSING x COLUMNS a int)",
            "FROM item",
        );
        refuses_read(
            "SELECT * FROM JSON_TABLE(x, '$' COLUMNS (a int PATH '$.a')) j",
            "FROM item",
        );
    }

    #[test]
    fn accepts_the_plugins_updates() {
        assert_eq!(
            check_update(
                r#"UPDATE "jobs" SET "status" = $1, "worker" = NULL, "finished_at" = now(), "errors" = $2::jsonb WHERE "id" = $3 AND "status" = $4 AND "worker" IS NOT DISTINCT FROM $5"#
            ),
            Ok(target(None, "jobs"))
        );
        assert_eq!(
            check_update(
                r#"UPDATE "jobs" SET "status" = $1 WHERE "status" = $2 AND "worker" IS NOT DISTINCT FROM $3 AND "id" IN ($4, $5, $6)"#
            ),
            Ok(target(None, "jobs"))
        );
        assert_eq!(
            check_update("UPDATE a SET (x, y) = (SELECT 1, 2) WHERE id IN (SELECT id FROM b)"),
            Ok(target(None, "a"))
        );
        assert_eq!(
            check_update("UPDATE jobs AS j SET n = j.n + 1 WHERE j.id = $1"),
            Ok(target(None, "jobs"))
        );
        // A dead owner's rows in one statement: the pairs as a typed VALUES list.
        assert_eq!(
            check_update(
                r#"UPDATE "app"."chunks" SET "status" = $1, "locked_at" = NULL WHERE "status" = $2 AND "id" IN ($3::bigint, $5::bigint) AND ("id", "locked_at") IN (VALUES ($3::bigint, $4::timestamp with time zone), ($5::bigint, $6::timestamp(6) without time zone)) AND "name" IN (VALUES ($7::character varying(255)), ($8::job_state), ($9::"Mixed State"))"#
            ),
            Ok(target(Some("app"), "chunks"))
        );
    }

    #[test]
    fn folds_update_targets_like_postgresql() {
        let cases = [
            ("UPDATE Jobs SET x = 1", target(None, "jobs")),
            ("UPDATE \"Jobs\" SET x = 1", target(None, "Jobs")),
            ("UPDATE App.\"Jobs\" SET x = 1", target(Some("app"), "Jobs")),
            (
                "UPDATE \"App\".JOBS j SET x = 1",
                target(Some("App"), "jobs"),
            ),
            (
                "UPDATE public.jobs SET x = 1",
                target(Some("public"), "jobs"),
            ),
        ];
        for (sql, expected) in cases {
            assert_eq!(check_update(sql), Ok(expected), "{sql}");
        }
        refuses_update("UPDATE db.app.jobs SET x = 1", "not a longer name");
    }

    #[test]
    fn refuses_updates_that_are_not_plain() {
        refuses_update("UPDATE a SET x = 1 FROM b", "UPDATE … FROM is not allowed");
        refuses_update(
            "UPDATE a SET x = 1 RETURNING *",
            "UPDATE … RETURNING is not allowed",
        );
        refuses_update(
            "WITH y AS (SELECT 1) UPDATE a SET x = 1",
            "WITH … UPDATE is not allowed",
        );
        refuses_update(
            "UPDATE a SET x = pg_sleep(1)",
            "function pg_sleep is not allowed",
        );
        refuses_update(
            "UPDATE a SET x = 1 WHERE id IN (SELECT id FROM b WHERE pg_sleep(1) IS NULL)",
            "function pg_sleep",
        );
        refuses_update(
            "UPDATE a SET x = 1 WHERE id IN (SELECT id FROM b FOR UPDATE)",
            "locking clause",
        );
        refuses_update(
            "UPDATE a SET x = (WITH d AS (DELETE FROM b RETURNING 1) SELECT 1)",
            "data-modifying DELETE",
        );
        refuses_update("UPDATE a SET x = nextval('s')", "function nextval");
        refuses_update(
            "UPDATE a SET x = 1; UPDATE b SET y = 2",
            "expected exactly one statement, got 2",
        );
        refuses_update(
            "DELETE FROM a",
            "only one plain UPDATE is allowed, not DELETE",
        );
        refuses_update("SELECT 1", "only one plain UPDATE is allowed, not SELECT");
        refuses_update("SET statement_timeout = 0", "not SET");
        refuses_update("UPDATE ONLY a SET x = 1", "UPDATE ONLY");
    }

    #[test]
    fn refuses_oversized_and_deep_text_without_overflowing() {
        let long = format!("SELECT 1 WHERE {}", "1 = 1 AND ".repeat(10_000));
        assert!(long.len() > 100_000);
        refuses_read(&long, "more than the 65536 allowed");
        refuses_update(&long, "more than the 65536 allowed");

        let deep = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        refuses_read(&deep, "recursion limit exceeded");
        refuses_update(&deep, "recursion limit exceeded");

        // The parser builds left-deep chains in a loop, so only the walk's
        // own limit stops them; dropping them needs the guard's big stack.
        let chain = format!("SELECT 1{}", "+1".repeat(32_000));
        assert!(chain.len() <= MAX_SQL_BYTES);
        refuses_read(&chain, "nested more than 500 levels deep");
        let update = format!("UPDATE t SET x = 1{}", "+1".repeat(32_000));
        refuses_update(&update, "nested more than 500 levels deep");
        let union = format!("SELECT 1{}", " UNION SELECT 1".repeat(4_000));
        accepts_read(&union);
    }

    #[test]
    fn works_from_a_small_caller_stack() {
        // A caller with a small stack (a Tokio worker has 2 MiB) is safe
        // because the guard parses on its own thread.
        let chain = format!("SELECT 1{}", "+1".repeat(32_000));
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || check_read(&chain))
            .expect("spawn test thread");
        let result = worker.join().expect("no overflow");
        assert!(result.is_err());
    }

    #[test]
    fn allowlists_are_sorted_lower_case_and_consistent() {
        assert!(ALLOWED_FUNCTIONS.windows(2).all(|pair| pair[0] < pair[1]));
        for name in ALLOWED_FUNCTIONS.iter().chain(KEYWORD_FUNCTIONS) {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
        for name in KEYWORD_FUNCTIONS {
            assert!(ALLOWED_FUNCTIONS.contains(name), "{name}");
        }
        for name in ALLOWED_FUNCTIONS {
            let unquoted = ObjectName::from(vec![Ident::new(*name)]);
            assert_eq!(check_function_name(&unquoted), Ok(()), "{name}");
            let quoted = ObjectName::from(vec![Ident::with_quote('"', *name)]);
            let quoted_ok = !KEYWORD_FUNCTIONS.contains(name);
            assert_eq!(check_function_name(&quoted).is_ok(), quoted_ok, "{name}");
        }
    }
}
