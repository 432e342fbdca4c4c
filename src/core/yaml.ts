// Re-exported so callers can load YAML support lazily with `await import('../core/yaml.js')`
// and get named exports even from the bundled (code-split) CLI.
export { parse, stringify } from 'yaml';
