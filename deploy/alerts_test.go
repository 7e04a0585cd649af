package deploy_test

import (
	"strings"
	"testing"
)

// alertRules and alertTests are the alert rules and their promtool unit
// tests, relative to this folder.
const (
	alertRules = "alerts.yml"
	alertTests = "alerts_test.yml"
)

// TestAlertRulesValid runs `promtool check rules` on alerts.yml.
func TestAlertRulesValid(t *testing.T) {
	bin := requireTool(t, "promtool", "prometheus")
	out, err := runTool(t, toolEnv(t, nil), bin, "check", "rules", alertRules)
	if err != nil {
		failConfig(t, alertRules, out, err)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool: got %q, want SUCCESS", out)
	}
}

// TestAlertRulesFire runs `promtool test rules` on alerts_test.yml: each
// alert fires, with its labels and summary, on the series that should
// raise it, and not for the healthy instance beside it.
func TestAlertRulesFire(t *testing.T) {
	bin := requireTool(t, "promtool", "prometheus")
	out, err := runTool(t, toolEnv(t, nil), bin, "test", "rules", alertTests)
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", alertTests, err, out)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool: got %q, want SUCCESS", out)
	}
}
