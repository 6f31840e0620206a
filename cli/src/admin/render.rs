//! Lists from the management API as an aligned table, TSV or JSON.

use std::io::{self, IsTerminal, Write};

use serde_json::{Map, Value};

/// How a list is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// Tab-separated, a header line first: for cut, awk, spreadsheets.
    Tsv,
    /// JSON.
    Json,
}

impl Format {
    /// A table on a terminal, TSV when piped.
    pub fn for_stdout() -> Format {
        if io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Tsv
        }
    }
}

/// The field at a dotted path (`queue.name`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// One value as a cell: text as is, nothing for null, JSON otherwise; never a tab or a
/// line break, so rows stay rows.
pub fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    s.replace(['\t', '\n', '\r'], " ")
}

/// Rows of picked columns.
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: Vec<String>, items: &[Value]) -> Table {
        let rows = items
            .iter()
            .map(|i| columns.iter().map(|c| at(i, c).clone()).collect())
            .collect();
        Table { columns, rows }
    }

    pub fn write(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        match format {
            Format::Json => {
                let list: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        let mut m = Map::new();
                        for (c, v) in self.columns.iter().zip(r) {
                            m.insert(c.clone(), v.clone());
                        }
                        Value::Object(m)
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &list)?;
                writeln!(out)
            }
            Format::Tsv => {
                writeln!(out, "{}", self.columns.join("\t"))?;
                for r in &self.rows {
                    let cells: Vec<String> = r.iter().map(cell).collect();
                    writeln!(out, "{}", cells.join("\t"))?;
                }
                Ok(())
            }
            Format::Table => {
                let cells: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| r.iter().map(cell).collect())
                    .collect();
                let mut widths: Vec<usize> =
                    self.columns.iter().map(|c| c.chars().count()).collect();
                for r in &cells {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(c.chars().count());
                    }
                }
                let line = |out: &mut dyn Write, r: &[String]| -> io::Result<()> {
                    let mut text = String::new();
                    for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                        if i > 0 {
                            text.push_str("  ");
                        }
                        text.push_str(c);
                        if i + 1 < r.len() {
                            text.extend(std::iter::repeat_n(' ', w - c.chars().count()));
                        }
                    }
                    writeln!(out, "{}", text.trim_end())
                };
                line(out, &self.columns)?;
                for r in &cells {
                    line(out, r)?;
                }
                if cells.is_empty() {
                    writeln!(out, "(none)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(t: &Table, f: Format) -> String {
        let mut out = Vec::new();
        t.write(f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tables_align_and_tsv_stays_one_row_per_item() {
        let items = vec![
            json!({"name": "orders", "messages": 12, "queue": {"vhost": "/"}}),
            json!({"name": "a\tb", "messages": null, "tags": ["x", "y"]}),
        ];
        let t = Table::new(
            vec!["name".into(), "messages".into(), "queue.vhost".into()],
            &items,
        );
        assert_eq!(
            text(&t, Format::Table),
            "name    messages  queue.vhost\norders  12        /\na b\n"
        );
        assert_eq!(
            text(&t, Format::Tsv),
            "name\tmessages\tqueue.vhost\norders\t12\t/\na b\t\t\n"
        );
        let j: Value = serde_json::from_str(&text(&t, Format::Json)).unwrap();
        assert_eq!(
            j[0],
            json!({"name": "orders", "messages": 12, "queue.vhost": "/"})
        );
        assert_eq!(cell(&json!(["x", "y"])), "x,y");
    }
}
