pub mod pg;
pub mod s3;
