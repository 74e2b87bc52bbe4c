//! Aligned text tables for the commands that print one (`images`, `devices`, `status`):
//! columns padded to their widest cell (in characters), two spaces apart, the last column
//! unpadded, trailing space trimmed. Pure.

/// The rows (the first is usually the header) as aligned lines, each ending in `\n`.
pub fn aligned<R: AsRef<[S]>, S: AsRef<str>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = vec![];
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let n = cell.as_ref().chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells = row.as_ref();
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let cell = cell.as_ref();
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
