//! What the jobs `run`, `chat`, `train` and `serve` share, as a library layer over plain
//! option structs: the governed session around the main job (`governed`), its telemetry
//! (`telemetry`), its eco accounting (`accounting`), which model it runs with which prompt
//! (`model`), and retrieval from the document index (`rag`). The binary maps its flags and
//! the configuration onto these options; nothing here knows the command line.

pub mod accounting;
pub mod governed;
pub mod model;
pub mod rag;
pub mod telemetry;
