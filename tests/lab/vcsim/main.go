// vcsim for lifeboat's tests: a vCenter simulator built from Debian's govmomi
// simulator library (Debian ships the library, not the vcsim command).
//
// It creates the simulator's VPX model (one datacenter "DC0" with a standalone
// host, a cluster of hosts, a datastore, a distributed port group and two VMs
// per host, e.g. DC0_H0_VM0), serves the vSphere SOAP API over plain HTTP on
// 127.0.0.1 at a port the kernel picks, prints the endpoint URL
// (http://127.0.0.1:PORT/sdk) as the first line of standard output and runs
// until it is killed.
//
// Login: unlike the library's default (any non-empty user and password),
// only the configured user and password are accepted, so that tests can see a
// login fault. Defaults: user "user", password "pass"; override with the
// flags -username and -password.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	username := flag.String("username", "user", "the only user name Login accepts")
	password := flag.String("password", "pass", "the only password Login accepts")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model: %v", err)
	}
	defer model.Remove()

	model.Service.TLS = nil
	model.Service.RegisterEndpoints = true
	// A fresh *url.Userinfo (not simulator.DefaultLogin) makes the session
	// manager check the user name and password.
	model.Service.Listen = &url.URL{
		Host: "127.0.0.1:0",
		User: url.UserPassword(*username, *password),
	}

	server := model.Service.NewServer()
	defer server.Close()

	endpoint := *server.URL
	endpoint.User = nil
	fmt.Println(endpoint.String())
	os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
