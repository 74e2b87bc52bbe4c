//! Aligned text tables for the commands that print one (`images`, `devices`, `status`):
//! columns padded to their widest cell (in characters), two spaces apart, the last column
//! unpadded, trailing space trimmed. Control characters in a cell (an escape sequence or a
//! newline from a node's answer, a disk's model, an image's name) are shown as `?`: a table
//! never moves the cursor, recolours the terminal or adds a line. Pure.

/// The rows (the first is usually the header) as aligned lines, each ending in `\n`.
pub fn aligned<R: AsRef<[S]>, S: AsRef<str>>(rows: &[R]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .map(|c| {
                    c.as_ref()
                        .chars()
                        .map(|ch| if ch.is_control() { '?' } else { ch })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = vec![];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut out = String::new();
    for cells in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = w - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_cells_are_shown_not_obeyed() {
        let t = aligned(&[
            vec!["name", "state"],
            vec!["pi-01\u{1b}[2J", "alive\nfake line"],
        ]);
        assert!(!t.contains('\u{1b}') && t.lines().count() == 2, "{t:?}");
        assert!(
            t.contains("pi-01?[2J") && t.contains("alive?fake line"),
            "{t:?}"
        );
    }

    #[test]
    fn columns_align_on_characters() {
        let t = aligned(&[
            vec!["A", "BB", "C"],
            vec!["ééé", "x", ""],
            vec!["d", "e", "f"],
        ]);
        assert_eq!(t, "A    BB  C\nééé  x\nd    e   f\n");
        assert_eq!(aligned::<Vec<&str>, &str>(&[]), "");
    }
}
