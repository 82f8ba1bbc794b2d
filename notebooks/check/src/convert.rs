//! evcxr notebook -> Rust: the code cells of a notebook become the body of one function, in
//! order, so variables flow from cell to cell as they do in the kernel.
//!
//! - `:dep NAME = ...` lines name crates; every other `:` line is an evcxr command and is
//!   dropped (`:cache`, `:timing`, ...).
//! - A cell whose last line is an expression without `;` (evcxr displays its value) gets that
//!   line printed with `{:?}`, as evcxr shows it.
//! - Before each cell the generated code records the cell number, so a failure names it.

/// One notebook converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// Crates named by `:dep` lines.
    pub deps: Vec<String>,
    /// The function body.
    pub body: String,
    /// Number of code cells.
    pub cells: usize,
}

/// Converts notebook JSON text; errors name what is wrong.
pub fn convert(json: &str) -> Result<Converted, String> {
    let nb: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let cells = nb["cells"].as_array().ok_or("no `cells` array")?;
    let mut deps = Vec::new();
    let mut body = String::new();
    let mut n = 0usize;
    for cell in cells {
        if cell["cell_type"] != "code" {
            continue;
        }
        n += 1;
        let src: String = match &cell["source"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a.iter().filter_map(|l| l.as_str()).collect(),
            _ => return Err(format!("code cell {n}: no source")),
        };
        let mut lines: Vec<String> = Vec::new();
        for line in src.lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix(":dep ") {
                let name = rest
                    .split(['=', ' '])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                deps.push(name);
            } else if !t.starts_with(':') {
                lines.push(line.to_string());
            }
        }
        // The displayed trailing expression, if any.
        if let Some(last) = lines.iter().rposition(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with("//")
        }) {
            let t = lines[last].trim_end().to_string();
            let is_expr = !t.ends_with(';')
                && !t.ends_with('}')
                && !t.ends_with('{')
                && !t.ends_with(',')
                && !t.starts_with(|c: char| c.is_whitespace());
            if is_expr {
                lines[last] = format!("println!(\"{{:?}}\", {t});");
            }
        }
        body += &format!(
            "// ---- code cell {n} ----\ncrate::CELL.store({n}, std::sync::atomic::Ordering::SeqCst);\n"
        );
        body += &lines.join("\n");
        body += "\n";
    }
    Ok(Converted {
        deps,
        body,
        cells: n,
    })
}
