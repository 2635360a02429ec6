// bboltcheck: the format oracle for registry-node's storage engine, built on real bbolt.
//
//	bboltcheck check <file>           runs tx.Check(); prints one error per line, exits 1 if any
//	bboltcheck dump <file>            prints the whole tree as JSON (keys and values in hex)
//	bboltcheck write <file> <spec>    writes a file from a JSON spec (inline or a path to a .json file)
//
// JSON of a bucket: {"sequence": n, "entries": [{"k": hex, "v": hex} | {"k": hex, "b": bucket}]}.
// A spec: {"pageSize": n, "root": bucket, "deletes": [{"path": [hex...], "k": hex}]}; the
// deletes run in a second transaction, so the file ends with free pages.
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"
)

type entry struct {
	K string  `json:"k"`
	V *string `json:"v,omitempty"`
	B *bucket `json:"b,omitempty"`
}

type bucket struct {
	Sequence uint64  `json:"sequence"`
	Entries  []entry `json:"entries"`
}

type del struct {
	Path []string `json:"path"`
	K    string   `json:"k"`
}

type spec struct {
	PageSize int    `json:"pageSize"`
	Root     bucket `json:"root"`
	Deletes  []del  `json:"deletes"`
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	must(err)
	return b
}

func dumpBucket(b *bolt.Bucket) bucket {
	out := bucket{Sequence: b.Sequence(), Entries: []entry{}}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		e := entry{K: hex.EncodeToString(k)}
		if v == nil {
			child := dumpBucket(b.Bucket(k))
			e.B = &child
		} else {
			s := hex.EncodeToString(v)
			e.V = &s
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

type putter interface {
	Put(k, v []byte) error
	CreateBucket(k []byte) (*bolt.Bucket, error)
}

func fill(b *bolt.Bucket, spec bucket) {
	for _, e := range spec.Entries {
		if e.B != nil {
			child, err := b.CreateBucket(unhex(e.K))
			must(err)
			fill(child, *e.B)
		} else {
			must(b.Put(unhex(e.K), unhex(*e.V)))
		}
	}
	if spec.Sequence != 0 {
		must(b.SetSequence(spec.Sequence))
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: bboltcheck check|dump|write <file> [spec]")
		os.Exit(2)
	}
	cmd, path := os.Args[1], os.Args[2]
	switch cmd {
	case "check":
		db, err := bolt.Open(path, 0600, &bolt.Options{ReadOnly: true})
		must(err)
		defer db.Close()
		bad := 0
		must(db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				fmt.Println(err)
				bad++
			}
			return nil
		}))
		if bad > 0 {
			os.Exit(1)
		}
		fmt.Println("ok")
	case "dump":
		db, err := bolt.Open(path, 0600, &bolt.Options{ReadOnly: true})
		must(err)
		defer db.Close()
		root := bucket{Entries: []entry{}}
		must(db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				child := dumpBucket(b)
				root.Entries = append(root.Entries, entry{K: hex.EncodeToString(name), B: &child})
				return nil
			})
		}))
		out, err := json.Marshal(root)
		must(err)
		fmt.Println(string(out))
	case "write":
		raw := os.Args[3]
		var data []byte
		if strings.HasPrefix(strings.TrimSpace(raw), "{") {
			data = []byte(raw)
		} else {
			var err error
			data, err = os.ReadFile(raw)
			must(err)
		}
		var s spec
		must(json.Unmarshal(data, &s))
		opts := &bolt.Options{}
		if s.PageSize != 0 {
			opts.PageSize = s.PageSize
		}
		db, err := bolt.Open(path, 0600, opts)
		must(err)
		must(db.Update(func(tx *bolt.Tx) error {
			for _, e := range s.Root.Entries {
				b, err := tx.CreateBucket(unhex(e.K))
				must(err)
				fill(b, *e.B)
			}
			return nil
		}))
		if len(s.Deletes) > 0 {
			must(db.Update(func(tx *bolt.Tx) error {
				for _, d := range s.Deletes {
					b := tx.Bucket(unhex(d.Path[0]))
					for _, p := range d.Path[1:] {
						b = b.Bucket(unhex(p))
					}
					must(b.Delete(unhex(d.K)))
				}
				return nil
			}))
		}
		must(db.Close())
		fmt.Println("ok")
	default:
		fmt.Fprintln(os.Stderr, "unknown command", cmd)
		os.Exit(2)
	}
}

var _ putter = (*bolt.Bucket)(nil)
