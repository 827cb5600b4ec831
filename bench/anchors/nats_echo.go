// The NATS echo service of bench/procedures.py --nats-service go: the same service as
// bench/echo_procedures.py --mode nats (the SDK's NatsService), written in Go as users' NATS
// services typically are, so the bench measures the gateway against a cheap service.
//
// It registers what NatsService("echo-nats") with one handler for "nats/*" does: the NATS
// service API service "echo-nats" (version 1.0.0) answering $SRV.PING, $SRV.INFO and
// $SRV.STATS (each bare, .echo-nats and .echo-nats.<id>) with nats.micro's JSON
// (io.nats.micro.v1.*_response), and one endpoint "echo-nats" on subject wsgate.echo-nats in
// queue group echo-nats, whose metadata {"wsgate.actions": "nats/*"} the gateway's discovery
// routes. A request is the gateway's {"action", "context"} body; the answer is
// {"reply": [{"type": "nats/PONG", "payload": <the action's payload>}]}. As in
// wsgate.sdk.nats_service, a body that is not an invocation answers the error headers with
// code 400, an action type outside nats/ code 404.
//
// nats.go 1.22.1 (Debian bookworm) has a micro package, but its experimental preview has no
// endpoint metadata, one fixed queue group ("q") and no endpoints in INFO, so the service API
// is answered here on plain subscriptions. Build: bench/anchors/build_nats_echo.sh.
//
//	nats_echo nats://127.0.0.1:4222
//
// Prints "echo-nats: listening on wsgate.echo-nats via <url>" when the subscriptions are on
// the server, and runs until SIGTERM/SIGINT.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

const (
	name       = "echo-nats"
	version    = "1.0.0"
	subject    = "wsgate." + name
	queueGroup = name
	actionsKey = "wsgate.actions"
	patterns   = "nats/*"
	prefix     = "nats/"
)

type endpointInfo struct {
	Name       string            `json:"name"`
	Subject    string            `json:"subject"`
	QueueGroup string            `json:"queue_group"`
	Metadata   map[string]string `json:"metadata"`
}

type info struct {
	Type        string            `json:"type"`
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	Description *string           `json:"description"`
	Endpoints   []endpointInfo    `json:"endpoints"`
	Metadata    map[string]string `json:"metadata"`
}

type ping struct {
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Version  string            `json:"version"`
	Metadata map[string]string `json:"metadata"`
}

type endpointStats struct {
	Name                  string          `json:"name"`
	Subject               string          `json:"subject"`
	QueueGroup            string          `json:"queue_group"`
	NumRequests           int64           `json:"num_requests"`
	NumErrors             int64           `json:"num_errors"`
	LastError             string          `json:"last_error"`
	ProcessingTime        int64           `json:"processing_time"`
	AverageProcessingTime int64           `json:"average_processing_time"`
	Data                  json.RawMessage `json:"data"`
}

type stats struct {
	Type      string            `json:"type"`
	Name      string            `json:"name"`
	ID        string            `json:"id"`
	Version   string            `json:"version"`
	Started   string            `json:"started"`
	Endpoints []endpointStats   `json:"endpoints"`
	Metadata  map[string]string `json:"metadata"`
}

// invocation is what the echo reads of the gateway's body: the action's type and payload, and
// that the context names a connection (decode_invocation's minimum).
type invocation struct {
	Action *struct {
		Type    *string         `json:"type"`
		Payload json.RawMessage `json:"payload"`
	} `json:"action"`
	Context *struct {
		ConnectionID *string `json:"connectionId"`
	} `json:"context"`
}

var (
	replyHead = []byte(`{"reply":[{"type":"nats/PONG","payload":`)
	replyTail = []byte(`}]}`)
	null      = []byte("null")
)

// answer is the reply body to one request, or the error code and description.
func answer(body []byte) ([]byte, string, string) {
	var inv invocation
	if json.Unmarshal(body, &inv) != nil || inv.Action == nil || inv.Action.Type == nil ||
		inv.Context == nil || inv.Context.ConnectionID == nil {
		return nil, "400", "not an invocation"
	}
	if len(*inv.Action.Type) < len(prefix) || (*inv.Action.Type)[:len(prefix)] != prefix {
		return nil, "404", "no handler for this action type"
	}
	payload := bytes.TrimSpace(inv.Action.Payload)
	if len(payload) == 0 {
		payload = null
	}
	out := make([]byte, 0, len(replyHead)+len(payload)+len(replyTail))
	out = append(append(append(out, replyHead...), payload...), replyTail...)
	return out, "", ""
}

type service struct {
	id          string
	started     time.Time
	numRequests atomic.Int64
	numErrors   atomic.Int64
	processing  atomic.Int64
}

func (s *service) handle(m *nats.Msg) {
	t0 := time.Now()
	s.numRequests.Add(1)
	body, code, description := answer(m.Data)
	var err error
	if code == "" {
		err = m.Respond(body)
	} else {
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set("Nats-Service-Error", description)
		reply.Header.Set("Nats-Service-Error-Code", code)
		err = m.RespondMsg(reply)
	}
	if err != nil {
		s.numErrors.Add(1)
	}
	s.processing.Add(int64(time.Since(t0)))
}

func (s *service) endpoint() endpointInfo {
	return endpointInfo{Name: name, Subject: subject, QueueGroup: queueGroup,
		Metadata: map[string]string{actionsKey: patterns}}
}

func (s *service) info() any {
	return info{Type: "io.nats.micro.v1.info_response", ID: s.id, Name: name, Version: version,
		Endpoints: []endpointInfo{s.endpoint()}, Metadata: map[string]string{}}
}

func (s *service) ping() any {
	return ping{Type: "io.nats.micro.v1.ping_response", ID: s.id, Name: name, Version: version,
		Metadata: map[string]string{}}
}

func (s *service) stats() any {
	n, total := s.numRequests.Load(), s.processing.Load()
	var avg int64
	if n > 0 {
		avg = total / n
	}
	ep := s.endpoint()
	return stats{Type: "io.nats.micro.v1.stats_response", Name: name, ID: s.id, Version: version,
		Started: s.started.UTC().Format("2006-01-02T15:04:05.000Z"),
		Endpoints: []endpointStats{{Name: ep.Name, Subject: ep.Subject,
			QueueGroup: ep.QueueGroup, NumRequests: n, NumErrors: s.numErrors.Load(),
			ProcessingTime: total, AverageProcessingTime: avg, Data: null}},
		Metadata: map[string]string{}}
}

func (s *service) subscribe(nc *nats.Conn) error {
	if _, err := nc.QueueSubscribe(subject, queueGroup, s.handle); err != nil {
		return err
	}
	verbs := map[string]func() any{"PING": s.ping, "INFO": s.info, "STATS": s.stats}
	for verb, of := range verbs {
		of := of
		respond := func(m *nats.Msg) {
			body, _ := json.Marshal(of())
			_ = m.Respond(body)
		}
		for _, subj := range []string{
			"$SRV." + verb, "$SRV." + verb + "." + name, "$SRV." + verb + "." + name + "." + s.id,
		} {
			if _, err := nc.Subscribe(subj, respond); err != nil {
				return err
			}
		}
	}
	return nc.Flush() // a PING after the SUBs on one connection: the server has them
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nats_echo nats://HOST:PORT")
		os.Exit(2)
	}
	url := os.Args[1]
	nc, err := nats.Connect(url, nats.Timeout(10*time.Second))
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-nats: %s: %v\n", url, err)
		os.Exit(1)
	}
	s := &service{id: nuid.Next(), started: time.Now()}
	if err := s.subscribe(nc); err != nil {
		fmt.Fprintf(os.Stderr, "echo-nats: subscribe: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("echo-nats: listening on %s via %s\n", subject, url)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = nc.Drain()
}
