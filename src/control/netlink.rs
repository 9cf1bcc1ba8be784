//! placeholder: rtnetlink client (being written)
