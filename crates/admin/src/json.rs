//! JSON shapes shared by the handlers: header tables both ways, and the
//! list query parameters RabbitMQ's API takes (`columns`, and `page`,
//! `page_size`, `name`, `use_regex`, `sort`, `sort_reverse` for
//! pagination).

use crate::error::ApiError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_model::{FieldTable, FieldValue};

/// A request body read as JSON whatever its `Content-Type` (scripts send
/// `curl -d` bodies as form data); an empty body is `null`, anything else
/// that is not JSON is RabbitMQ's 400 `not_json`.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|_| ApiError::bad_request("not_json"))
    }
}

/// A header or argument value as JSON.
pub(crate) fn field_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Void => Value::Null,
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal { scale, value } => {
            json!(f64::from(*value) / 10f64.powi(i32::from(*scale)))
        }
        FieldValue::ShortString(s) => json!(s),
        FieldValue::LongString(b) => json!(String::from_utf8_lossy(b)),
        FieldValue::Bytes(b) => json!(STANDARD.encode(b)),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Array(a) => Value::Array(a.iter().map(field_to_json).collect()),
    }
}

/// A table as a JSON object.
pub(crate) fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.clone(), field_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A JSON value as a header or argument value (integers stay integers, as
/// RabbitMQ keeps them).
pub(crate) fn json_to_field(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::string(s.clone()),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_to_field).collect()),
        Value::Object(o) => FieldValue::Table(object_to_table(o)),
    }
}

/// A JSON object as a table.
pub(crate) fn object_to_table(o: &Map<String, Value>) -> FieldTable {
    o.iter()
        .map(|(k, v)| (k.clone(), json_to_field(v)))
        .collect()
}

/// A JSON value that should be an object of arguments (`null` and absent
/// are empty).
pub(crate) fn arguments(v: Option<&Value>) -> Result<FieldTable, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(FieldTable::default()),
        Some(Value::Object(o)) => Ok(object_to_table(o)),
        Some(_) => Err(ApiError::bad_request("arguments must be an object")),
    }
}

/// A boolean field as RabbitMQ's API accepts it: `true`, or the string
/// `"true"` (rabbitmqadmin sends strings).
pub(crate) fn flag(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} must be a boolean, got {other}"
        ))),
    }
}

/// 400 `[{key_missing,k},...]`, worded as RabbitMQ words it, for the keys
/// of `keys` whose value in `body` is absent or fails `present`.
pub(crate) fn require_keys(
    body: &Value,
    keys: &[&str],
    present: impl Fn(&Value) -> bool,
) -> Result<(), ApiError> {
    let gone: Vec<String> = keys
        .iter()
        .filter(|k| !body.get(**k).is_some_and(&present))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if gone.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("[{}]", gone.join(","))))
    }
}

/// A string field, if present.
pub(crate) fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// `{"rate": r}`, the `_details` object of a counter.
pub(crate) fn rate(r: f64) -> Value {
    json!({ "rate": (r * 10.0).round() / 10.0 })
}

/// The query parameters of a listing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    /// Comma-separated (possibly dotted) fields to keep.
    pub(crate) columns: Option<String>,
    /// 1-based page; its presence asks for the paginated shape.
    pub(crate) page: Option<String>,
    /// Items per page (default 100, at most 500, as RabbitMQ).
    pub(crate) page_size: Option<String>,
    /// Name filter: a substring, or a regular expression with `use_regex`.
    pub(crate) name: Option<String>,
    /// See `name`.
    pub(crate) use_regex: Option<String>,
    /// Field to sort by (dotted paths allowed).
    pub(crate) sort: Option<String>,
    /// Reverse the sort.
    pub(crate) sort_reverse: Option<String>,
}

impl ListQuery {
    fn reverse(&self) -> bool {
        self.sort_reverse.as_deref() == Some("true")
    }

    /// Whether `name` passes the name filter.
    ///
    /// # Errors
    ///
    /// 400 for an invalid regular expression.
    pub(crate) fn name_filter(&self) -> Result<impl Fn(&str) -> bool + use<>, ApiError> {
        let pattern = self.name.clone().filter(|n| !n.is_empty());
        let regex =
            match (&pattern, self.use_regex.as_deref() == Some("true")) {
                (Some(p), true) => Some(regex::Regex::new(p).map_err(|_| {
                    ApiError::bad_request(format!("invalid regular expression '{p}'"))
                })?),
                _ => None,
            };
        Ok(move |name: &str| match (&pattern, &regex) {
            (None, _) => true,
            (Some(_), Some(re)) => re.is_match(name),
            (Some(p), None) => name.contains(p.as_str()),
        })
    }

    /// The page asked for: `(page, size)`, or `None` for a plain list.
    ///
    /// # Errors
    ///
    /// 400 for a page or size that is not a positive number.
    pub(crate) fn paging(&self) -> Result<Option<(usize, usize)>, ApiError> {
        let Some(page) = &self.page else {
            return Ok(None);
        };
        let bad = || ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            error: "invalid_pagination_parameters",
            reason: "Invalid pagination parameters".into(),
        };
        let page: usize = page.parse().map_err(|_| bad())?;
        let size: usize = match &self.page_size {
            Some(s) => s.parse().map_err(|_| bad())?,
            None => 100,
        };
        if page == 0 || size == 0 || size > 500 {
            return Err(bad());
        }
        Ok(Some((page, size)))
    }

    /// Sorts `items` by the `sort` field (numbers as numbers, text as
    /// text), if one was asked for.
    pub(crate) fn sort(&self, items: &mut [Value]) {
        let Some(field) = self.sort.as_deref().filter(|s| !s.is_empty()) else {
            return;
        };
        items.sort_by(|a, b| compare(lookup(a, field), lookup(b, field)));
        if self.reverse() {
            items.reverse();
        }
    }

    /// The listing's answer: sorted, filtered by name, paginated if asked,
    /// and cut down to `columns`.
    ///
    /// # Errors
    ///
    /// 400 for bad pagination or a bad name pattern.
    pub(crate) fn respond(&self, mut items: Vec<Value>) -> Result<Value, ApiError> {
        let keep = self.name_filter()?;
        let total = items.len();
        if self.name.is_some() {
            items.retain(|i| keep(i.get("name").and_then(Value::as_str).unwrap_or("")));
        }
        self.sort(&mut items);
        self.page_of(items, total)
    }

    /// Paginates already filtered and sorted `items` (`total` before
    /// filtering) and applies `columns`.
    ///
    /// # Errors
    ///
    /// 400 for bad pagination, or a page past the end.
    pub(crate) fn page_of(&self, items: Vec<Value>, total: usize) -> Result<Value, ApiError> {
        match self.window(items.len())? {
            None => Ok(Value::Array(self.columns(items))),
            Some(w) => {
                let filtered = items.len();
                let slice = items.into_iter().skip(w.skip).take(w.size).collect();
                Ok(self.shape(&w, slice, filtered, total))
            }
        }
    }

    /// The rows a page shows out of `filtered`, or `None` for a plain
    /// list.
    ///
    /// # Errors
    ///
    /// 400 for bad pagination, or a page past the end.
    pub(crate) fn window(&self, filtered: usize) -> Result<Option<Window>, ApiError> {
        let Some((page, size)) = self.paging()? else {
            return Ok(None);
        };
        let pages = filtered.div_ceil(size).max(1);
        if page > pages {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                error: "page_out_of_range",
                reason: format!(
                    "Page out of range, page: {page} page size: {size}, len: {filtered}"
                ),
            });
        }
        Ok(Some(Window {
            page,
            size,
            pages,
            skip: (page - 1) * size,
        }))
    }

    /// RabbitMQ's paginated object around one page of rows.
    pub(crate) fn shape(
        &self,
        w: &Window,
        slice: Vec<Value>,
        filtered: usize,
        total: usize,
    ) -> Value {
        json!({
            "filtered_count": filtered,
            "item_count": slice.len(),
            "items": self.columns(slice),
            "page": w.page,
            "page_count": w.pages,
            "page_size": w.size,
            "total_count": total,
        })
    }

    /// Keeps only the asked-for columns of each item (dotted paths keep
    /// nested fields).
    pub(crate) fn columns(&self, items: Vec<Value>) -> Vec<Value> {
        let Some(cols) = self.columns.as_deref().filter(|c| !c.is_empty()) else {
            return items;
        };
        let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
        items.into_iter().map(|i| pick(&i, &cols)).collect()
    }

    /// [`ListQuery::columns`] for one object.
    pub(crate) fn columns_of(&self, item: Value) -> Value {
        self.columns(vec![item]).pop().unwrap_or(Value::Null)
    }
}

/// One page of a listing ([`ListQuery::window`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// 1-based page number.
    pub(crate) page: usize,
    /// Rows per page.
    pub(crate) size: usize,
    /// Pages in all.
    pub(crate) pages: usize,
    /// Rows before this page.
    pub(crate) skip: usize,
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

fn pick(item: &Value, cols: &[&str]) -> Value {
    let mut out = Map::new();
    for col in cols {
        let Some(v) = lookup(item, col) else { continue };
        let mut parts = col.split('.').peekable();
        let mut at = &mut out;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                at.insert(part.to_owned(), v.clone());
            } else {
                let entry = at
                    .entry(part.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(next) = entry else { break };
                at = next;
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(page: Option<&str>, size: Option<&str>) -> ListQuery {
        ListQuery {
            page: page.map(str::to_owned),
            page_size: size.map(str::to_owned),
            ..ListQuery::default()
        }
    }

    #[test]
    fn fields_round_trip_through_json() {
        let mut t = FieldTable::new();
        t.insert("n".into(), FieldValue::I32(5));
        t.insert("s".into(), FieldValue::string("x"));
        t.insert("b".into(), FieldValue::Bool(true));
        let j = table_to_json(&t);
        assert_eq!(j, json!({"n": 5, "s": "x", "b": true}));
        let back = object_to_table(j.as_object().expect("object"));
        assert_eq!(back.get("n"), Some(&FieldValue::I64(5)));
        assert_eq!(back.get("s").and_then(FieldValue::as_str), Some("x"));
    }

    #[test]
    fn pages_have_rabbitmqs_shape() {
        let items: Vec<Value> = (0..5).map(|i| json!({"name": format!("q{i}")})).collect();
        let page = q(Some("2"), Some("2"))
            .respond(items.clone())
            .expect("page");
        assert_eq!(page["items"], json!([{"name": "q2"}, {"name": "q3"}]));
        assert_eq!(page["page_count"], 3);
        assert_eq!(page["filtered_count"], 5);
        assert_eq!(page["total_count"], 5);
        let past = q(Some("9"), Some("2"))
            .respond(items.clone())
            .expect_err("past the end");
        assert_eq!(past.error, "page_out_of_range");
        assert!(q(Some("0"), None).respond(items).is_err());
    }

    #[test]
    fn names_filter_sort_and_columns() {
        let items = vec![
            json!({"name": "b", "messages": 2, "x": {"y": 1, "z": 2}}),
            json!({"name": "ab", "messages": 10, "x": {"y": 3}}),
            json!({"name": "c", "messages": 1}),
        ];
        let query = ListQuery {
            name: Some("b".into()),
            sort: Some("messages".into()),
            sort_reverse: Some("true".into()),
            columns: Some("name,x.y".into()),
            ..ListQuery::default()
        };
        let out = query.respond(items).expect("list");
        assert_eq!(
            out,
            json!([{"name": "ab", "x": {"y": 3}}, {"name": "b", "x": {"y": 1}}])
        );
    }
}
