//! What the user sees of a command besides its result: progress of long byte streams on
//! stderr ([`progress`], with [`progress::human_bytes`]) and the aligned tables some commands
//! print on stdout ([`table`]).

pub mod progress;
pub mod table;
