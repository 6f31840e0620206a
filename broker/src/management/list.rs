//! What RabbitMQ's list endpoints accept (`rabbit_mgmt_util`): `sort` (a dotted path) and
//! `sort_reverse`, `columns`, and, only when `page` is given, paging (`page`, `page_size` up to
//! 500, default 100) with a `name` filter (case-insensitive substring, or a caseless regex
//! with `use_regex=true`) and the paged envelope.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::ApiError;

/// RabbitMQ's `MAX_PAGE_SIZE`.
pub const MAX_PAGE_SIZE: usize = 500;
const DEFAULT_PAGE_SIZE: usize = 100;

/// A list endpoint's query parameters.
pub type Query = HashMap<String, String>;

/// Sorts, filters, pages and trims `items` as the query asks; the answer is the array, or the
/// paged envelope when `page` was given.
pub fn respond(mut items: Vec<Value>, q: &Query) -> Result<Value, ApiError> {
    sort(&mut items, q);
    let paging = match q.get("page") {
        Some(p) => Some(page_params(p, q.get("page_size"))?),
        None => None,
    };
    let Some((page, size)) = paging else {
        return Ok(Value::Array(columns(items, q)));
    };
    let total = items.len();
    if let Some(name) = q.get("name").filter(|n| !n.is_empty()) {
        let matcher = Matcher::new(name, q.get("use_regex").is_some_and(|v| v == "true"));
        items.retain(|i| matcher.matches(i.get("name").and_then(Value::as_str).unwrap_or("")));
    }
    let filtered = items.len();
    let offset = (page - 1) * size;
    if offset > filtered {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "page_out_of_range",
            format!("Page out of range, page: {page} page size: {size}, len: {filtered}"),
        ));
    }
    let items: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
    let items = columns(items, q);
    Ok(json!({
        "filtered_count": filtered,
        "item_count": items.len(),
        "items": items,
        "page": page,
        "page_count": filtered.div_ceil(size),
        "page_size": size,
        "total_count": total,
    }))
}

fn page_params(page: &str, size: Option<&String>) -> Result<(usize, usize), ApiError> {
    let parse = |s: &str| s.trim().parse::<i64>();
    let (Ok(page), Ok(size)) = (
        parse(page),
        size.map_or(Ok(DEFAULT_PAGE_SIZE as i64), |s| parse(s)),
    ) else {
        return Err(ApiError::bad_request("Pagination parameters are invalid"));
    };
    if page < 1 || size < 1 || size > MAX_PAGE_SIZE as i64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_pagination_parameters",
            format!("Invalid pagination parameters: page number {page}, page size {size}"),
        ));
    }
    Ok((page as usize, size as usize))
}

enum Matcher {
    Substring(String),
    Regex(Option<regex::Regex>),
}

impl Matcher {
    fn new(name: &str, regex: bool) -> Self {
        if regex {
            // An invalid pattern matches nothing, as RabbitMQ's does.
            Matcher::Regex(
                regex::RegexBuilder::new(name)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .ok(),
            )
        } else {
            Matcher::Substring(name.to_lowercase())
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Substring(s) => name.to_lowercase().contains(s.as_str()),
            Matcher::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(name)),
        }
    }
}

/// The value at a dotted path.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// RabbitMQ's term order for what lists hold: missing (sorted as 0) and numbers before
/// booleans before strings; strings bytewise.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> (u8, f64) {
        match v {
            None | Some(Value::Null) => (0, 0.0),
            Some(Value::Number(n)) => (0, n.as_f64().unwrap_or(0.0)),
            Some(Value::Bool(b)) => (1, f64::from(u8::from(*b))),
            Some(Value::String(_)) => (2, 0.0),
            Some(_) => (3, 0.0),
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    ra.0.cmp(&rb.0)
        .then(ra.1.partial_cmp(&rb.1).unwrap_or(Ordering::Equal))
        .then_with(|| match (a, b) {
            (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
            _ => Ordering::Equal,
        })
}

fn sort(items: &mut [Value], q: &Query) {
    let first = q.get("sort").filter(|s| !s.is_empty());
    let keys: Vec<&str> = first
        .map(String::as_str)
        .into_iter()
        .chain(["vhost", "name"])
        .collect();
    items.sort_by(|a, b| {
        keys.iter()
            .map(|k| compare(at(a, k), at(b, k)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    if q.get("sort_reverse").is_some_and(|v| v == "true") {
        items.reverse();
    }
}

/// Keeps only the `columns` asked for (dotted paths keep their nesting).
pub fn columns(items: Vec<Value>, q: &Query) -> Vec<Value> {
    match q.get("columns").filter(|c| !c.is_empty()) {
        Some(cols) => items.iter().map(|i| pick(i, cols)).collect(),
        None => items,
    }
}

/// One object with only the `columns` (comma-separated dotted paths).
pub fn pick(item: &Value, cols: &str) -> Value {
    let mut out = Map::new();
    for col in cols.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let Some(v) = at(item, col) else { continue };
        let mut parts: Vec<&str> = col.split('.').collect();
        let last = parts.pop().unwrap_or(col);
        let mut obj = Some(&mut out);
        for p in parts {
            obj = obj.and_then(|o| {
                o.entry(p.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
            });
        }
        // A path through something an earlier column made a non-object: nothing to add.
        if let Some(obj) = obj {
            obj.insert(last.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn names(v: &Value) -> Vec<&str> {
        let items = v.get("items").unwrap_or(v);
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect()
    }

    fn items() -> Vec<Value> {
        ["q1", "amq.gen-x", "Q2", "other"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "vhost": "/", "messages": 10 - i, "m": {"r": i}}))
            .collect()
    }

    #[test]
    fn without_page_the_list_is_sorted_and_name_is_ignored() {
        let v = respond(items(), &q(&[("name", "q1")])).unwrap();
        assert_eq!(names(&v), ["Q2", "amq.gen-x", "other", "q1"]);
        let v = respond(
            items(),
            &q(&[("sort", "messages"), ("sort_reverse", "true")]),
        )
        .unwrap();
        assert_eq!(names(&v), ["q1", "amq.gen-x", "Q2", "other"]);
    }

    #[test]
    fn pages_filter_and_envelope() {
        let v = respond(
            items(),
            &q(&[("page", "1"), ("page_size", "2"), ("name", "q")]),
        )
        .unwrap();
        assert_eq!(names(&v), ["Q2", "amq.gen-x"]);
        assert_eq!(v["total_count"], 4);
        assert_eq!(v["filtered_count"], 3);
        assert_eq!(v["page_count"], 2);
        assert_eq!(v["item_count"], 2);
        let v = respond(items(), &q(&[("page", "3"), ("page_size", "2")])).unwrap();
        assert_eq!(
            v["items"],
            json!([]),
            "past the last page but not past the end"
        );
        let e = respond(items(), &q(&[("page", "4"), ("page_size", "2")])).unwrap_err();
        assert_eq!(e.error, "page_out_of_range");
        let e = respond(items(), &q(&[("page", "1"), ("page_size", "501")])).unwrap_err();
        assert_eq!(e.error, "invalid_pagination_parameters");
        let e = respond(items(), &q(&[("page", "x")])).unwrap_err();
        assert_eq!(e.error, "bad_request");
        let v = respond(
            items(),
            &q(&[("page", "1"), ("name", "^Q\\d$"), ("use_regex", "true")]),
        )
        .unwrap();
        assert_eq!(names(&v), ["Q2", "q1"]);
    }

    #[test]
    fn columns_keep_their_nesting() {
        let v = respond(
            items(),
            &q(&[("columns", "name,m.r,nope"), ("sort", "m.r")]),
        )
        .unwrap();
        assert_eq!(v[0], json!({"name": "q1", "m": {"r": 0}}));
        // Overlapping columns from a client never panic the server.
        let v = respond(items(), &q(&[("columns", "m,m.r,name,name.x,m.r.z")])).unwrap();
        assert_eq!(v[0], json!({"name": "Q2", "m": {"r": 2}}));
    }
}
