package memstore

// presenceRegistry holds the presence entries of every instance sharing a
// memory backend. (Placeholder: the implementation lands with the presence
// contract suite.)
type presenceRegistry struct{}

func newPresenceRegistry() *presenceRegistry { return &presenceRegistry{} }
