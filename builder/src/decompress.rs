//! decompress: to be written.
