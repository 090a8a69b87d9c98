// Replaced at build time by the bundler; the sources report the package version.
export const VERSION = "0.1.0";
