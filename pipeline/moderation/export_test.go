package moderation

// Unregister removes a kind that a test registered, so the test can run
// again (-count) and leaves the registry as other tests expect it.
func Unregister(kind string) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	delete(registry.kinds, kind)
}
