package ollama

// GroupAlive lets the external tests check that a stopped server left no
// process behind.
var GroupAlive = groupAlive
