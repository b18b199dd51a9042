//! `uring-exp --driver epoll|uring --listen ADDR --upstream ADDR [--fixed-files]`: the minimal
//! HTTP/1.1 keep-alive proxy of issue 15's io_uring experiment, single-threaded (see lib.rs).

fn main() {
    let args = match uring_exp::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("uring-exp: {e}");
            eprintln!(
                "usage: uring-exp --driver epoll|uring --listen ADDR --upstream ADDR [--fixed-files]"
            );
            std::process::exit(2);
        }
    };
    let r = match args.driver.as_str() {
        "epoll" => uring_exp::epoll::run(args.listen, args.upstream),
        _ => uring_exp::uring::run(args.listen, args.upstream, args.fixed_files),
    };
    if let Err(e) = r {
        eprintln!("uring-exp ({}): {e}", args.driver);
        std::process::exit(1);
    }
}
