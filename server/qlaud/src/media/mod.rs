//! Uploaded media: reading what qlaud needs to bound a provider's bill
//! (an audio file's duration) and the multipart forms it arrives in.

pub mod duration;
pub mod upload;
