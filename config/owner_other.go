//go:build !unix

package config

import "os"

// exposed is false where files have no Unix mode: on Windows Go reports
// every writable file as 0666, whatever its ACL allows, so a warning here
// would fire on every file and tell nothing. The installer's ACLs are
// what protect the token there.
func exposed(os.FileInfo) bool { return false }
