package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/gcingest/gcingest/config"
)

// configEnv names the config file when --config is not given.
const configEnv = "GCINGEST_CONFIG"

// defaultConfigPath is where the packages and install scripts put the
// config on this platform: /etc/gcingest on Linux (packaging/nfpm.yaml),
// %ProgramData%\gcingest on Windows (packaging/windows/install.ps1), and
// /usr/local/etc/gcingest on macOS and the BSDs (packaging/README.md).
func defaultConfigPath(getenv func(string) string) string {
	switch runtime.GOOS {
	case "linux":
		return "/etc/gcingest/config.toml"
	case "windows":
		pd := getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "gcingest", "config.toml")
	}
	return "/usr/local/etc/gcingest/config.toml"
}

// configUsage is the --config flag's text in every command's help.
func configUsage() string {
	return fmt.Sprintf("the config `FILE` (TOML; see config.example.toml); default: $%s, else %s",
		configEnv, defaultConfigPath(os.Getenv))
}

// resolveConfig picks the config file: --config, else GCINGEST_CONFIG,
// else the platform's default (c.defaultConfig) when that file exists.
// from says which, for the note on stderr. No file at all is a usage error
// naming all three.
func (c *cli) resolveConfig(cmd, flagValue string) (path, from string, err error) {
	if flagValue != "" {
		return flagValue, "", nil
	}
	if p := c.getenv(configEnv); p != "" {
		return p, configEnv, nil
	}
	if c.defaultConfig != "" {
		_, err := os.Stat(c.defaultConfig)
		if err == nil {
			return c.defaultConfig, "the default", nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// Most often a permission problem: say so rather than "missing".
			return "", "", &configError{fmt.Errorf("default config: %w", err)}
		}
	}
	def := c.defaultConfig
	if def == "" {
		def = "(none)"
	}
	return "", "", &usageError{cmd: cmd, msg: fmt.Sprintf("--config FILE is required: %s is not set and the default config %s does not exist", configEnv, def)}
}

// loadConfig loads and validates the config named by --config, else
// GCINGEST_CONFIG, else the platform default; a config not named on the
// command line is named on stderr, so the user knows which file spoke.
// Every failure is a configError (exit 2).
func (c *cli) loadConfig(cmd, flagValue string) (*config.Config, error) {
	return c.loadConfigWatches(cmd, flagValue, true)
}

// loadConfigWatches is loadConfig for commands that talk to the server
// only (pull, archives, interfaces): with needWatch false a config without
// any [[watch]] is fine. Every other key is validated as for run.
func (c *cli) loadConfigWatches(cmd, flagValue string, needWatch bool) (*config.Config, error) {
	path, from, err := c.resolveConfig(cmd, flagValue)
	if err != nil {
		return nil, err
	}
	if from != "" {
		fmt.Fprintf(c.stderr, "gcingest: config %s (%s)\n", path, from)
	}
	if needWatch {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, &configError{err}
		}
		return cfg, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &configError{fmt.Errorf("config %s: %w", path, err)}
	}
	b, err := config.ReadFile(abs)
	if err != nil {
		return nil, &configError{err}
	}
	cfg, err := config.Parse(bytes.NewReader(b), abs)
	if err != nil {
		return nil, &configError{err}
	}
	cfg.Path = abs
	if err := withoutNoWatch(cfg.Validate()); err != nil {
		return nil, &configError{fmt.Errorf("config %s: %w", abs, err)}
	}
	return cfg, nil
}

// withoutNoWatch drops the "no [[watch]] table" problem from Validate's
// joined errors.
func withoutNoWatch(err error) error {
	if err == nil {
		return nil
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	var keep []error
	for _, e := range all {
		var fe *config.FieldError
		if errors.As(e, &fe) && fe.Key == "watch" {
			continue
		}
		keep = append(keep, e)
	}
	return errors.Join(keep...)
}
