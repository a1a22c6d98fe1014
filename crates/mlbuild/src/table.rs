//! The tables of command output (`metrics`, `params`, `stats`), as aligned text or as
//! Markdown, drawn by `comfy-table`.
//!
//! One module decides how they look, so every command agrees: text columns two spaces
//! apart with numbers right-aligned and no trailing spaces; Markdown (for pull-request
//! comments) with every cell escaped. Main functions: [`text`], [`markdown`].

use comfy_table::{presets, CellAlignment, Table};

/// How the cells of a column line up: numbers right, everything else left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart, one line per row, each line
/// ending in a newline.
pub(crate) fn text<const N: usize>(
    header: &[&str; N],
    rows: &[[String; N]],
    align: &[Align; N],
) -> String {
    text_dyn(header, rows, align)
}

/// [`text`] for tables whose columns are known only at run time (`exp show`).
pub(crate) fn text_dyn<R: AsRef<[String]>>(header: &[&str], rows: &[R], align: &[Align]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row.as_ref().to_vec());
    }
    let n = header.len();
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        column.set_cell_alignment(alignment(align[i]));
    }
    format!("{}\n", table.trim_fmt())
}

/// A GitHub-flavoured Markdown table, cells escaped with [`md_escape`] and padded so the
/// source reads as a table too.
pub(crate) fn markdown<const N: usize>(
    header: &[&str; N],
    rows: &[[String; N]],
    align: &[Align; N],
) -> String {
    markdown_dyn(header, rows, align)
}

/// [`markdown`] for tables whose columns are known only at run time.
pub(crate) fn markdown_dyn<R: AsRef<[String]>>(
    header: &[&str],
    rows: &[R],
    align: &[Align],
) -> String {
    let mut table = Table::new();
    table.load_style(presets::ASCII_MARKDOWN);
    table.set_header(header.iter().map(|h| md_escape(h)).collect::<Vec<_>>());
    for row in rows {
        table.add_row(
            row.as_ref()
                .iter()
                .map(|c| md_escape(c))
                .collect::<Vec<_>>(),
        );
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_cell_alignment(alignment(align[i]));
    }
    format!("{table}\n")
}

fn alignment(align: Align) -> CellAlignment {
    match align {
        Align::Left => CellAlignment::Left,
        Align::Right => CellAlignment::Right,
    }
}

/// Escapes what would break a Markdown table cell or add formatting: `|` would end the
/// cell, a newline the row, and `*`, `` ` ``, `\`, `[`, `]`, `<` and `>` would emphasise, link or inline
/// HTML. The table crate leaves content alone, so this is ours.
pub(crate) fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push(' '),
            '|' | '*' | '`' | '\\' | '[' | ']' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Align::{Left, Right};

    fn rows() -> [[String; 3]; 2] {
        [
            ["f1", "0.9", "a|b"].map(String::from),
            ["latency_ms", "12", ""].map(String::from),
        ]
    }

    #[test]
    fn text_aligns_numbers_right_and_trims_line_ends() {
        assert_eq!(
            text(&["metric", "value", "note"], &rows(), &[Left, Right, Left]),
            "metric      value  note\n\
             f1            0.9  a|b\n\
             latency_ms     12\n"
        );
        assert_eq!(text(&["a"], &[], &[Left]), "a\n");
    }

    #[test]
    fn markdown_pads_and_escapes_cells() {
        assert_eq!(
            markdown(&["metric", "value", "note"], &rows(), &[Left, Right, Left]),
            "| metric     | value | note |\n\
             |------------|-------|------|\n\
             | f1         |   0.9 | a\\|b |\n\
             | latency_ms |    12 |      |\n"
        );
    }

    #[test]
    fn escapes_markdown_syntax() {
        assert_eq!(
            md_escape("a|b *c* `d` [e](f) <g>\nh"),
            "a\\|b \\*c\\* \\`d\\` \\[e\\](f) \\<g\\> h"
        );
    }
}
