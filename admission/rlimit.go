package admission

// Limits of DerivedMaxConns.
const (
	// MinHeadroom is the fewest descriptors DerivedMaxConns leaves for
	// everything but WebSockets: the listener, /healthz and /readyz,
	// requests being refused, Redis connections, files and log output.
	MinHeadroom = 100
	// HeadroomDivisor makes the headroom at least a tenth of the limit.
	HeadroomDivisor = 10
	// MaxDerivedConns caps DerivedMaxConns when the open-file limit is
	// unlimited or huge.
	MaxDerivedConns = 1 << 20
	// FallbackMaxConns is DerivedMaxConns where the open-file limit cannot
	// be read.
	FallbackMaxConns = 10000
)

// DerivedMaxConns returns the connection limit of a zero Config.MaxConns:
// MaxConnsFor the process's open-file limit (the soft RLIMIT_NOFILE,
// which the Go runtime raises to the hard limit at start), or
// FallbackMaxConns where it cannot be read.
func DerivedMaxConns() int {
	limit, err := openFileLimit()
	if err != nil {
		return FallbackMaxConns
	}
	return MaxConnsFor(limit)
}

// MaxConnsFor returns the connections an open-file limit allows: the limit
// minus max(MinHeadroom, limit/HeadroomDivisor), at least 1 and at most
// MaxDerivedConns.
func MaxConnsFor(limit uint64) int {
	headroom := max(MinHeadroom, limit/HeadroomDivisor)
	if limit <= headroom {
		return 1
	}
	return int(min(limit-headroom, MaxDerivedConns))
}
