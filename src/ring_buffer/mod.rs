//! Single-producer/single-consumer ring of fixed-size packet slots between
//! the io thread and the classifier. Not built yet: see the packet reader
//! issue. The crate's lock-free `unsafe` will live here and only here.
