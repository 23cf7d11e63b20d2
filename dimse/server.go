package dimse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxPDULength    = 256 << 10
	DefaultMaxAssociations = 16
	DefaultARTIMTimeout    = 30 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
)

// Limits on Config.MaxPDULength: PS3.8 allows any length; below 4 KiB the
// fragmenting costs more than it saves, above 16 MiB one association could
// hold too much memory.
const (
	minMaxPDULength = 4 << 10
	maxMaxPDULength = 16 << 20
)

// Config configures a Server.
type Config struct {
	// AETitle is the called AE title the server answers to (1 to 16
	// characters); an association request for another is rejected.
	AETitle string
	// Allow lists the callers accepted. A request matching none is rejected
	// (A-ASSOCIATE-RJ, calling AE title not recognized) and logged with its
	// AE titles and address. Empty refuses every caller: a storage node
	// open to anyone on the network is a way to fill its disk.
	Allow []Caller
	// AcceptUnknownSOPClasses accepts for storage, beside
	// StorageSOPClasses, any SOP class this server does not know
	// (UnknownSOPClass), as storescp's --promiscuous does: a presentation
	// context for it is accepted with the transfer syntaxes of storage,
	// and its instances stored as any other. Off, such a context is
	// refused (abstract syntax not supported), which is the default:
	// nothing downstream may understand what is not a storage class of
	// the standard.
	AcceptUnknownSOPClasses bool
	// TransferSyntaxes lists the transfer syntax UIDs accepted for storage;
	// nil means DefaultTransferSyntaxes. Verification accepts implicit and
	// explicit VR little endian whatever the list says.
	TransferSyntaxes []string
	// MaxPDULength is the largest P-DATA-TF PDU the server receives, sent
	// to the caller in the A-ASSOCIATE-AC; 0 means DefaultMaxPDULength. Each
	// association holds one buffer of this size.
	MaxPDULength uint32
	// MaxAssociations bounds the associations served at once; 0 means
	// DefaultMaxAssociations. A caller beyond it is rejected as transient
	// (local limit exceeded), so it can try again later.
	MaxAssociations int
	// ARTIMTimeout bounds the wait for an A-ASSOCIATE-RQ after a connection
	// opens, and for the caller to close the connection after a release,
	// a rejection or an abort (the ARTIM timer, PS3.8 §9.1.5); also a write.
	// 0 means DefaultARTIMTimeout.
	ARTIMTimeout time.Duration
	// IdleTimeout aborts an established association on which nothing
	// arrives for that long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Store receives each instance; required.
	Store Store
	// Logger receives a line per association and per refusal; nil logs
	// nothing.
	Logger *slog.Logger
}

// Caller is one entry of the allow list: a calling AE title, a network the
// caller's address is in, or both (both must then match).
type Caller struct {
	AETitle string       // empty: any AE title
	Network netip.Prefix // the zero Prefix: any address
}

func (c Caller) matches(ae string, addr netip.Addr) bool {
	if c.AETitle != "" && c.AETitle != ae {
		return false
	}
	if c.Network.IsValid() && !c.Network.Contains(addr.Unmap()) {
		return false
	}
	return true
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	if err := validAETitle(c.AETitle); err != nil {
		return fmt.Errorf("ae_title: %w", err)
	}
	for i, a := range c.Allow {
		if a.AETitle == "" && !a.Network.IsValid() {
			return fmt.Errorf("allow[%d]: names neither an AE title nor a network", i)
		}
		if a.AETitle != "" {
			if err := validAETitle(a.AETitle); err != nil {
				return fmt.Errorf("allow[%d]: %w", i, err)
			}
		}
	}
	for i, ts := range c.TransferSyntaxes {
		if !validUID(ts) {
			return fmt.Errorf("transfer_syntaxes[%d]: %q is not a UID", i, ts)
		}
	}
	if c.MaxPDULength != 0 && (c.MaxPDULength < minMaxPDULength || c.MaxPDULength > maxMaxPDULength) {
		return fmt.Errorf("max_pdu_length: %d is outside %d to %d", c.MaxPDULength, minMaxPDULength, maxMaxPDULength)
	}
	if c.MaxAssociations < 0 {
		return fmt.Errorf("max_associations: %d is negative", c.MaxAssociations)
	}
	if c.ARTIMTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	if c.Store == nil {
		return errors.New("store: none given")
	}
	return nil
}

// CheckAETitle reports why ae is not a valid AE title (PS3.5 §6.2: 1 to
// 16 characters of the default repertoire, no backslash or control
// character, not only spaces), or nil. The config checks its own titles
// with it, so that what it accepts is what NewServer accepts.
func CheckAETitle(ae string) error { return validAETitle(ae) }

// validAETitle checks an AE title against PS3.5 §6.2 (AE): 1 to 16
// characters of the default repertoire, no backslash or control character,
// not only spaces.
func validAETitle(ae string) error {
	if len(ae) == 0 || len(ae) > 16 {
		return fmt.Errorf("AE title %q must have 1 to 16 characters", ae)
	}
	blank := true
	for _, c := range []byte(ae) {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return fmt.Errorf("AE title %q has a character outside printable ASCII or a backslash", ae)
		}
		if c != ' ' {
			blank = false
		}
	}
	if blank {
		return fmt.Errorf("AE title %q is blank", ae)
	}
	return nil
}

// validUID checks the form of a UID (PS3.5 §9.1): digits and dots, at most
// 64 characters, no empty component.
func validUID(u string) bool {
	if len(u) == 0 || len(u) > 64 || u[0] == '.' || u[len(u)-1] == '.' {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c == '.' {
			if u[i-1] == '.' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Stats are the server's counters since it was made, in all or for one
// calling AE title.
type Stats struct {
	Current   int64 // associations established now
	Total     int64 // associations established
	Refused   int64 // association requests rejected
	Instances int64 // instances stored (C-STORE success)
	Bytes     int64 // data set bytes of the instances stored
}

// Server is a DICOM Storage SCP: it accepts associations for Verification
// and every Storage SOP class, and hands each received instance to its
// Store. Make one with NewServer; Serve runs it.
type Server struct {
	cfg      Config
	log      *slog.Logger
	storage  map[string]bool // accepted abstract syntaxes for C-STORE
	syntaxes map[string]bool // accepted transfer syntaxes for C-STORE

	// allow is the allow list in force: cfg.Allow at start, replaced by
	// SetAllow (a reload) for associations requested after it.
	allow atomic.Pointer[[]Caller]

	current, total, refused, instances, bytes atomic.Int64

	// byCaller holds the same counters per calling AE title, for status
	// and metrics. A refused caller names itself, so a scan of AE titles
	// could grow it without end: it holds at most maxCallers titles, of
	// which refused ones take at most half, and what does not fit is
	// counted in the totals only.
	mu       sync.Mutex
	byCaller map[string]*Stats
}

// SetAllow replaces the allow list (Config.Allow) for the associations
// requested from now on; those established go on, as a sender in
// mid-series must not be cut off by a change of list. It refuses, keeping
// the list in force, a list Validate would refuse.
func (s *Server) SetAllow(allow []Caller) error {
	c := s.cfg
	c.Allow = allow
	if err := c.Validate(); err != nil {
		return fmt.Errorf("dicom listener: %w", err)
	}
	allow = slices.Clone(allow)
	s.allow.Store(&allow)
	return nil
}

// maxCallers bounds the calling AE titles Stats are kept for.
const maxCallers = 256

// NewServer validates cfg, fills its defaults and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dicom listener: %w", err)
	}
	if cfg.TransferSyntaxes == nil {
		cfg.TransferSyntaxes = DefaultTransferSyntaxes
	}
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = DefaultMaxPDULength
	}
	if cfg.MaxAssociations == 0 {
		cfg.MaxAssociations = DefaultMaxAssociations
	}
	if cfg.ARTIMTimeout == 0 {
		cfg.ARTIMTimeout = DefaultARTIMTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, storage: map[string]bool{}, syntaxes: map[string]bool{}, byCaller: map[string]*Stats{}}
	allow := slices.Clone(cfg.Allow)
	s.allow.Store(&allow)
	for _, c := range StorageSOPClasses {
		s.storage[c.UID] = true
	}
	for _, ts := range cfg.TransferSyntaxes {
		s.syntaxes[ts] = true
	}
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Current:   s.current.Load(),
		Total:     s.total.Load(),
		Refused:   s.refused.Load(),
		Instances: s.instances.Load(),
		Bytes:     s.bytes.Load(),
	}
}

// StatsByCaller returns the counters per calling AE title.
func (s *Server) StatsByCaller() map[string]Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Stats, len(s.byCaller))
	for ae, st := range s.byCaller {
		out[ae] = *st
	}
	return out
}

// count applies f to the counters of calling AE title ae; refused says
// the caller was refused.
func (s *Server) count(ae string, refused bool, f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.byCaller[ae]
	if st == nil {
		if len(s.byCaller) >= maxCallers || refused && len(s.byCaller) >= maxCallers/2 {
			return
		}
		st = &Stats{}
		s.byCaller[ae] = st
	}
	f(st)
}

// Serve accepts connections on ln until ctx is cancelled or ln fails, and
// serves each as an association. On return ln is closed and every
// association has ended: those still running when ctx is cancelled are
// aborted (an instance being received is not kept, and its sender was not
// told success). It returns nil after ctx was cancelled.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// A journaling store's background writer runs while the store is
	// served; deferred first, it stops after the last association ended.
	if j, ok := s.cfg.Store.(journaled); ok {
		done := j.serving()
		defer done()
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	slots := make(chan struct{}, s.cfg.MaxAssociations)
	// Callers beyond MaxAssociations are told to come back later by an
	// A-ASSOCIATE-RJ, which needs their request read first; a few spare
	// goroutines do that, and past them a connection is just closed.
	spare := make(chan struct{}, max(2, s.cfg.MaxAssociations/4))
	s.log.Info("dicom listener started", "listen", ln.Addr().String(), "ae_title", s.cfg.AETitle)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dicom listener %s: %w", ln.Addr(), err)
			}
			// Running out of file descriptors, say: wait and go on, as
			// net/http does, rather than end the listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("dicom listener: accept failed", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		busy := false
		select {
		case slots <- struct{}{}:
		default:
			select {
			case spare <- struct{}{}:
				busy = true
			default:
				s.log.Warn("dicom listener: too many connections, closed one", "remote", conn.RemoteAddr().String())
				conn.Close()
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if busy {
				defer func() { <-spare }()
			} else {
				defer func() { <-slots }()
			}
			s.serveConn(ctx, conn, busy)
		}()
	}
}
