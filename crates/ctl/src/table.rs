//! Plain-text tables: a header row and aligned columns, two spaces apart.
//!
//! Knows nothing about the management API: it lays out cells it is given.
//! Widths count `char`s (no East Asian width tables), control characters in
//! cells are escaped so one row stays one line, and a column whose non-empty
//! cells are all numbers is right-aligned.

use std::fmt::Write as _;

/// One cell's text and whether it holds a number (numbers align right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell {
    text: String,
    numeric: bool,
}

impl Cell {
    /// A text cell; control characters are escaped (`\n`, `\t`, `\u{1b}`).
    pub(crate) fn text(text: &str) -> Self {
        let text = if text.chars().any(char::is_control) {
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        } else {
            text.to_owned()
        };
        Self {
            text,
            numeric: false,
        }
    }

    /// A number cell.
    pub(crate) fn number(text: String) -> Self {
        Self {
            text,
            numeric: true,
        }
    }

    /// An empty cell (a field the server did not report).
    pub(crate) fn empty() -> Self {
        Self {
            text: String::new(),
            numeric: false,
        }
    }

    fn width(&self) -> usize {
        self.text.chars().count()
    }
}

/// A table under construction: headers fixed up front, rows pushed one by one.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table with these column headers.
    pub(crate) fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing trailing cells are empty, extra ones dropped.
    pub(crate) fn push(&mut self, mut row: Vec<Cell>) {
        row.resize(self.headers.len(), Cell::empty());
        self.rows.push(row);
    }

    /// The table as lines, each ending in `\n`, without trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        let mut right = vec![false; columns];
        for (i, (width, right)) in widths.iter_mut().zip(right.iter_mut()).enumerate() {
            let mut numbers = 0;
            let mut others = 0;
            for row in &self.rows {
                let cell = &row[i];
                *width = (*width).max(cell.width());
                match (cell.text.is_empty(), cell.numeric) {
                    (true, _) => {}
                    (false, true) => numbers += 1,
                    (false, false) => others += 1,
                }
            }
            *right = numbers > 0 && others == 0;
        }
        let mut out = String::new();
        let header_cells: Vec<Cell> = self.headers.iter().map(|h| Cell::text(h)).collect();
        for row in std::iter::once(&header_cells).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.width();
                // Writing to a String cannot fail.
                if right[i] {
                    let _ = write!(line, "{:pad$}{}", "", cell.text);
                } else {
                    let _ = write!(line, "{}{:pad$}", cell.text, "");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(headers: &[&str], rows: &[&[&str]]) -> Table {
        let mut t = Table::new(headers);
        for row in rows {
            t.push(
                row.iter()
                    .map(|c| match c.parse::<f64>() {
                        Ok(_) => Cell::number((*c).to_owned()),
                        Err(_) if c.is_empty() => Cell::empty(),
                        Err(_) => Cell::text(c),
                    })
                    .collect(),
            );
        }
        t
    }

    fn check(t: &Table, expected: &str) {
        assert_eq!(
            t.render(),
            expected,
            "\n--- got:\n{}--- expected:\n{expected}",
            t.render()
        );
    }

    #[test]
    fn columns_are_aligned_and_numbers_right_aligned() {
        let t = table(
            &["vhost", "name", "messages", "durable"],
            &[&["/", "orders", "12", "true"], &["/", "q", "3", "false"]],
        );
        check(
            &t,
            "vhost  name    messages  durable\n\
             /      orders        12  true\n\
             /      q              3  false\n",
        );
    }

    #[test]
    fn empty_table_is_the_header_line() {
        check(&table(&["name", "tags"], &[]), "name  tags\n");
    }

    #[test]
    fn missing_cells_are_blank_and_trailing_spaces_trimmed() {
        let t = table(
            &["name", "messages", "user"],
            &[&["a", "", ""], &["bb", "7", "guest"]],
        );
        check(
            &t,
            "name  messages  user\n\
             a\n\
             bb           7  guest\n",
        );
    }

    #[test]
    fn short_rows_are_padded_and_long_rows_cut() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec![Cell::text("x")]);
        t.push(vec![Cell::text("1"), Cell::text("2"), Cell::text("3")]);
        check(&t, "a  b\nx\n1  2\n");
    }

    #[test]
    fn mixed_columns_align_left() {
        let t = table(&["v"], &[&["10"], &["abc"]]);
        check(&t, "v\n10\nabc\n");
    }

    #[test]
    fn control_characters_are_escaped_and_width_counts_chars() {
        let t = table(&["payload", "n"], &[&["a\nb", "1"], &["é日", "22"]]);
        check(
            &t,
            "payload   n\n\
             a\\nb      1\n\
             é日       22\n",
        );
    }
}
