//! What the jobs `run`, `chat`, `train` and `serve` share, as a library layer over plain
//! option structs: the governed session around the main job (`governed`), its telemetry
//! (`telemetry`), its eco accounting (`accounting`), and which model it runs with which
//! prompt (`model`). The binary maps its flags and the configuration onto these options;
//! nothing here knows the command line.

pub mod accounting;
pub mod governed;
pub mod model;
pub mod telemetry;
