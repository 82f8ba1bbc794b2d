//! Notebook display: a dataset or `DataFrame` head as an HTML table for evcxr (Jupyter's Rust
//! kernel). In a terminal, polars' own `Display` (`println!("{df}")`) prints the text table.
//!
//! Rust polars has no HTML formatter (that lives in py-polars), so the table is written here,
//! styled like polars' notebook output: a shape line, column names with dtypes, at most `n`
//! rows, long cells shortened.

use polars::prelude::*;

use super::dataset::DynamicItemDataset;
use super::error::Result;
use super::value::Value;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn shorten(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The first `n` rows of `df` as an HTML table (with the shape and dtypes, as polars shows in
/// notebooks).
///
/// ```
/// use polars::prelude::*;
/// let df = DataFrame::new_infer_height(vec![Column::new("id".into(), ["a<b"])]).unwrap();
/// let html = voxbrain::dataio::html_table(&df, 5);
/// assert!(html.contains("<td>a&lt;b</td>") && html.contains("shape: (1, 1)"));
/// ```
pub fn html_table(df: &DataFrame, n: usize) -> String {
    let mut h = String::new();
    h.push_str("<div><small>shape: (");
    h.push_str(&format!("{}, {}", df.height(), df.width()));
    h.push_str(")</small><table border=\"1\" class=\"dataframe\"><thead><tr>");
    for c in df.columns() {
        h.push_str(&format!(
            "<th>{}<br><small>{}</small></th>",
            escape(c.name()),
            escape(&c.dtype().to_string())
        ));
    }
    h.push_str("</tr></thead><tbody>");
    let rows = df.height().min(n);
    for r in 0..rows {
        h.push_str("<tr>");
        for c in df.columns() {
            let v = c.get(r).map(Value::from_any).unwrap_or(Value::Null);
            h.push_str(&format!("<td>{}</td>", escape(&shorten(v.to_string(), 80))));
        }
        h.push_str("</tr>");
    }
    if df.height() > rows {
        h.push_str(&format!(
            "<tr><td colspan=\"{}\">… {} more rows</td></tr>",
            df.width().max(1),
            df.height() - rows
        ));
    }
    h.push_str("</tbody></table></div>");
    h
}

/// Wraps HTML in evcxr's rich-output markers; `print!` the result in a notebook cell.
///
/// ```
/// let out = voxbrain::dataio::evcxr_html("<b>hi</b>");
/// assert!(out.starts_with("EVCXR_BEGIN_CONTENT text/html\n"));
/// ```
pub fn evcxr_html(html: &str) -> String {
    format!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT\n")
}

impl DynamicItemDataset {
    /// The first `n` points of this view: static columns, plus the output keys' values when
    /// `with_outputs` (computing them, e.g. reading audio), as an HTML table.
    pub fn head_html(&self, n: usize, with_outputs: bool) -> Result<String> {
        let rows = self.len().min(n);
        let sub = self.with_positions(&(0..rows).collect::<Vec<_>>());
        let mut df = sub.to_polars()?;
        if with_outputs {
            let keys: Vec<String> = self
                .pipeline()
                .output_mapping()
                .iter()
                .map(|(o, _)| o.clone())
                .filter(|k| df.column(k).is_err())
                .collect();
            for key in keys {
                let vals: Vec<String> = (0..rows)
                    .map(|i| {
                        self.get(i)
                            .map(|p| p.get(&key).map(|v| v.to_string()).unwrap_or_default())
                    })
                    .collect::<Result<_>>()?;
                df.with_column(Column::new(key.as_str().into(), vals))?;
            }
        }
        let html = html_table(&df, n);
        Ok(format!(
            "<div><small>{} data points, the first {rows} shown</small></div>{html}",
            self.len()
        ))
    }

    /// Prints [`head_html`](Self::head_html) for evcxr to display as a table.
    pub fn evcxr_display(&self) {
        match self.head_html(10, false) {
            Ok(h) => print!("{}", evcxr_html(&h)),
            Err(e) => println!("{e}"),
        }
    }
}
