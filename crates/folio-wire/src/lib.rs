//! Sans-IO MongoDB wire protocol codec (to be written).
