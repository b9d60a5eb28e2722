//! Bare Pingora for the side-by-side benchmark (issue 16): a ProxyHttp with one fixed peer and no
//! filters, built from the same Pingora as payedge, so `benches/run.sh proxy` can show what
//! payedge's own work costs on top of the framework.
//!
//!     bare_pingora <listen> <upstream> <threads> [steal|nosteal]
//!
//! `steal` (the default) is Pingora's default work-stealing runtime (payedge's
//! `server.work_stealing: true`); `nosteal` its per-thread runtimes (payedge's default).

use async_trait::async_trait;
use pingora::prelude::*;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, threads, runtime) = match args.as_slice() {
        [_, listen, upstream, threads] => (listen, upstream, threads, "steal"),
        [_, listen, upstream, threads, runtime] => (listen, upstream, threads, runtime.as_str()),
        _ => {
            eprintln!("usage: bare_pingora <listen> <upstream> <threads> [steal|nosteal]");
            std::process::exit(2);
        }
    };
    let threads: usize = threads.parse().unwrap_or(1);
    let conf = pingora::server::configuration::ServerConf {
        threads,
        work_stealing: runtime != "nosteal",
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    proxy.add_tcp(listen);
    proxy.threads = Some(threads);
    server.add_service(proxy);
    server.run_forever();
}
