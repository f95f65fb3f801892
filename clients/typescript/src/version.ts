// The project's version (the workspace version in Cargo.toml; a test checks
// that package.json and this agree with it).
export const VERSION = "0.1.0";
