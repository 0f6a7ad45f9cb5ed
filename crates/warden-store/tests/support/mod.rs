pub mod etcd;
pub mod pg;
pub mod s3;
