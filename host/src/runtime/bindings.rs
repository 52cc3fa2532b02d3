//! Host bindings generated from the WIT contract in `wit/`.

// Every import may trap: replaying a recording ends the plugin's call when it
// asks something the recording does not hold. The types serialise, so a
// recording can store the answers.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    additional_derives: [serde::Serialize, serde::Deserialize],
});
