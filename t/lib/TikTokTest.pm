package TikTokTest;

# A small harness: a real redis-server and a real nginx with the built
# module, on free loopback ports, in a temp dir; a raw HTTP client; a RESP
# client; signing helpers; and data-driven cases (request, expected answer,
# expected Redis state).

use strict;
use warnings;

use Exporter 'import';
use File::Temp ();
use File::Path ();
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Fcntl ();
use Time::HiRes qw(sleep time);
use Digest::SHA ();
use Digest::MD5 ();
use MIME::Base64 ();
use JSON::PP ();
use Test::More;

our @EXPORT = qw(hmac_hex hmac_b64 json_decode json_encode run_cases
                 tiktok_dlr tiktok_seen keyslot events_of);

use Cwd ();
use File::Basename ();

my $ROOT = $ENV{TT_ROOT}
    || Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');

sub module_path {
    return $ENV{TT_MODULE} if $ENV{TT_MODULE};
    my $dir = $ENV{TT_SANITIZE} ? 'asan' : $ENV{TT_COVERAGE} ? 'coverage'
            : 'nginx';
    return "$ROOT/build/$dir/objs/ngx_tiktok_reports_module.so";
}

# Ports: each test file starts its servers on ports it reserves for its whole
# life.  A port is taken from below the kernel's ephemeral range (so that no
# client socket and no port-0 listener elsewhere can be on it), under an
# exclusive lock in a directory every run of this harness shares (so that
# two test files running at once never pick the same one), and only when
# nothing listens on it.  The locks go with the process.
my $PORT_LOCKS = $ENV{TT_PORT_LOCKS} || '/tmp/tiktok-reports-test-ports';
my %PORT_LOCK;

sub _port_range {
    my $low = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        my ($l) = split ' ', scalar(<$fh>) // '';
        $low = $l if $l && $l > 2048;
    }
    my $top = $low - 1;
    my $bottom = $top - 12000 > 1024 ? $top - 12000 : 1024;
    return ($bottom, $top);
}

# a port reserved for this process: locked, and nothing listens on it now
sub reserve_port {
    my ($p) = @_;
    return 0 if $PORT_LOCK{$p};
    unless (-d $PORT_LOCKS) {
        mkdir $PORT_LOCKS;
        chmod 01777, $PORT_LOCKS;
    }
    open my $fh, '>>', "$PORT_LOCKS/$p" or return 0;
    flock($fh, Fcntl::LOCK_EX() | Fcntl::LOCK_NB()) or return 0;
    # ReuseAddr: a port left in TIME_WAIT is fine, a listener is not
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or return 0;
    close $s;
    $PORT_LOCK{$p} = $fh;
    return 1;
}

sub free_port {
    my ($bottom, $top) = _port_range();
    for (1 .. 500) {
        my $p = $bottom + int(rand($top - $bottom + 1));
        return $p if reserve_port($p);
    }
    die "no free port between $bottom and $top";
}

sub new {
    my ($class, %opt) = @_;
    my $dir = File::Temp::tempdir('tiktok-test-XXXXXX', TMPDIR => 1,
                                  CLEANUP => !$ENV{TT_KEEP});
    chmod 0755, $dir;
    my $self = bless { dir => $dir, %opt }, $class;
    $self->{redis_port} = free_port();
    $self->{http_port} = free_port();
    return $self;
}

sub dir { $_[0]{dir} }
sub redis_port { $_[0]{redis_port} }
sub http_port { $_[0]{http_port} }

sub _spawn {
    my ($self, $env, @cmd) = @_;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setsid();
        # TT_COVERAGE=1: root (master, nginx -t) and nobody (workers) add
        # to the same .gcda files, which the first of them creates
        umask 0 if $ENV{TT_COVERAGE};
        %ENV = (%ENV, %$env);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/spawn.log";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

sub _wait_port {
    my ($port, $timeout) = @_;
    my $until = time + ($timeout || 10);
    while (time < $until) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        if ($s) { close $s; return 1 }
        sleep 0.02;
    }
    return 0;
}

# --- Redis ---------------------------------------------------------------

sub start_redis {
    my ($self, %opt) = @_;
    for my $try (1 .. 3) {
        return $self if $self->_start_redis(%opt);
        # the port was taken after it was reserved: only a first start may
        # move (nginx's configuration names the port)
        die "redis did not start:\n" . $self->_file('redis.log')
            if $self->{redis_started};
        $self->{redis_port} = free_port();
    }
    die "redis did not start on three ports";
}

sub _start_redis {
    my ($self, %opt) = @_;
    my $conf = "$self->{dir}/redis.conf";
    my $data = "$self->{dir}/redis-data";
    File::Path::make_path($data);
    open my $fh, '>', $conf or die $!;
    print $fh "port $self->{redis_port}\nbind 127.0.0.1\n"
        . "dir $data\nsave \"\"\nappendonly no\ndaemonize no\n"
        . "logfile $self->{dir}/redis.log\n"
        . ($opt{password} ? "requirepass $opt{password}\n" : '')
        . ($opt{extra} || '');
    close $fh;
    my $pid = $self->{redis_pid} = $self->_spawn({}, 'redis-server', $conf);
    $self->{redis_password} = $opt{password};
    delete $self->{redis_sock};
    # answers PING only once loaded; and it must be this one, not another
    # server that holds the port
    my $until = time + 10;
    while (time < $until) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{redis_pid};
            return 0;
        }
        my $info = eval { $self->redis('INFO', 'server') };
        if (defined $info) {
            my ($p) = $info =~ /^process_id:(\d+)/m;
            die "port $self->{redis_port} is served by another redis ($p)"
                unless $p && $p == $pid;
            $self->{redis_started} = 1;
            while (time < $until) {
                my $r = eval { $self->redis('PING') };
                return 1 if defined $r && $r eq 'PONG';
                sleep 0.05;
            }
            last;
        }
        delete $self->{redis_sock};
        sleep 0.02;
    }
    die "redis does not answer";
}

sub stop_redis {
    my ($self) = @_;
    my $pid = delete $self->{redis_pid} or return;
    kill 'CONT', $pid;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    delete $self->{redis_sock};
}

# the database later commands use, on this and later connections
sub select_db {
    my ($self, $db) = @_;
    $self->{redis_db} = $db;
    $self->redis('SELECT', $db);
}

sub freeze_redis { kill 'STOP', $_[0]{redis_pid} }
sub thaw_redis   { kill 'CONT', $_[0]{redis_pid} }

sub _resp_read {
    my ($sock) = @_;
    my $line = <$sock>;
    die "redis closed" unless defined $line;
    $line =~ s/\r\n$//;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+';
    return $v + 0 if $t eq ':';
    die "redis error: $v\n" if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        while (length($buf) < $v + 2) {
            my $n = read($sock, $buf, $v + 2 - length($buf), length($buf));
            die "redis closed" unless $n;
        }
        return substr($buf, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [ map { _resp_read($sock) } 1 .. $v ];
    }
    die "bad reply: $line";
}

# one command on a kept connection; returns the decoded reply, dies on error
sub redis {
    my ($self, @cmd) = @_;
    my $sock = $self->{redis_sock};
    unless ($sock) {
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $self->{redis_port}, Proto => 'tcp')
            or die "redis connect: $!";
        $self->{redis_sock} = $sock;
        if ($self->{redis_password}) {
            $self->redis('AUTH', $self->{redis_password});
        }
        if ($self->{redis_db}) {
            $self->redis('SELECT', $self->{redis_db});
        }
    }
    my $req = '*' . scalar(@cmd) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @cmd;
    print $sock $req;
    my $r = eval { _resp_read($sock) };
    if ($@) {
        delete $self->{redis_sock} if $@ =~ /closed/;
        die $@;
    }
    return $r;
}

sub hgetall {
    my ($self, $key) = @_;
    my $r = $self->redis('HGETALL', $key);
    return { @$r };
}

# --- nginx ---------------------------------------------------------------

sub nginx_conf {
    my ($self, %opt) = @_;
    my $d = $self->{dir};
    # module: another build (t/upgrade.t runs an earlier release beside)
    my $so = $opt{module} || module_path();
    my $user = $> == 0 ? "user nobody nogroup;\n" : '';
    my $workers = $opt{workers} || 1;
    my $redis = "127.0.0.1:$self->{redis_port}";
    my $http = $opt{http} || '';
    my $server = $opt{server} || '';
    for ($http, $server) {
        s/%%REDIS%%/$redis/g;
        s/%%REDIS_PORT%%/$self->{redis_port}/g;
        s/%%DIR%%/$d/g;
    }
    my $main = $opt{main} || '';
    # before: main-context lines ahead of our load_module (other modules first)
    my $before = $opt{before} || '';
    my $listen = $opt{listen} || '';
    my $events = $opt{events} || 'worker_connections 1024;';
    # no_redis: the module's default address
    my $redis_line = $opt{no_redis} ? '' : "tiktok_reports_redis $redis;";
    return <<"EOF";
$before
load_module $so;
$user
$main
worker_processes $workers;
error_log $d/error.log info;
pid $d/nginx.pid;
events { $events }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    $redis_line
$http
    server {
        listen 127.0.0.1:$self->{http_port} $listen;
$server
    }
}
EOF
}

sub _env {
    my %env;
    if ($ENV{TT_SANITIZE}) {
        my $asan = `gcc -print-file-name=libasan.so`;
        chomp $asan;
        $env{LD_PRELOAD} = $asan;
        $env{ASAN_OPTIONS} = 'detect_leaks=' . ($ENV{TT_LEAKS} ? 1 : 0) . ':abort_on_error=0:'
            . 'log_path=' . $_[0]{dir} . '/asan';
        $env{UBSAN_OPTIONS} = 'print_stacktrace=1:log_path='
            . $_[0]{dir} . '/ubsan';
        # full stacks, so that t/lsan.supp can name nginx's own leaks
        $env{LSAN_OPTIONS} = "suppressions=$ROOT/t/lsan.supp:"
            . 'print_suppressions=0:fast_unwind_on_malloc=0';
    }
    return \%env;
}

sub write_conf {
    my ($self, %opt) = @_;
    my $d = $self->{dir};
    for my $sub (qw(body proxy fastcgi uwsgi scgi)) {
        File::Path::make_path("$d/$sub");
        chmod 0777, "$d/$sub";
    }
    open my $fh, '>', "$d/nginx.conf" or die $!;
    print $fh $self->nginx_conf(%opt);
    close $fh;
}

# nginx -t with a config; returns (exit code, output)
sub nginx_test_conf {
    my ($self, %opt) = @_;
    $self->write_conf(%opt);
    # "nginx -t" exits without freeing its cycle: not a leak worth a report
    local $ENV{TT_LEAKS} = 0;
    my $env = $self->_env;
    local %ENV = (%ENV, %$env);
    my $mask = umask;
    umask 0 if $ENV{TT_COVERAGE};
    my $out = `nginx -t -p $self->{dir} -c $self->{dir}/nginx.conf 2>&1`;
    umask $mask;
    return ($? >> 8, $out);
}

sub start_nginx {
    my ($self, %opt) = @_;
    for my $try (1 .. 3) {
        return $self if $self->_start_nginx(%opt);
        $self->{http_port} = free_port();
    }
    die "nginx did not start on three ports";
}

sub _start_nginx {
    my ($self, %opt) = @_;
    $self->write_conf(%opt);
    unlink "$self->{dir}/nginx.pid";
    my $log_size = -s "$self->{dir}/error.log" || 0;
    my @vg;
    # TT_VALGRIND=1: nginx and its workers under memcheck, one log each
    @vg = ('valgrind', '--tool=memcheck', '--leak-check=full',
           '--errors-for-leak-kinds=definite', '--num-callers=30',
           "--log-file=$self->{dir}/valgrind.%p",
           "--suppressions=$ROOT/t/valgrind.supp")
        if $ENV{TT_VALGRIND};
    my $pid = $self->{nginx_pid} = $self->_spawn($self->_env, @vg, 'nginx',
        '-p', $self->{dir}, '-c', "$self->{dir}/nginx.conf",
        '-g', 'daemon off;');
    # the pid file is written once the listening sockets are bound
    my $until = time + ($ENV{TT_VALGRIND} ? 60 : 10);
    while (time < $until) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{nginx_pid};
            my $log = substr($self->error_log, $log_size);
            # the port was taken after it was reserved: another one
            return 0 if $log =~ /bind\(\) to 127\.0\.0\.1:$self->{http_port} failed \(98:/;
            die "nginx did not start:\n" . $log . $self->spawn_log;
        }
        last if $self->_file('nginx.pid') =~ /^$pid$/m;
        sleep 0.02;
    }
    _wait_port($self->{http_port}, 1)
        or die "nginx did not start:\n" . $self->error_log . $self->spawn_log;
    return 1;
}

sub reload_nginx {
    my ($self, %opt) = @_;
    $self->write_conf(%opt) if %opt;
    kill 'HUP', $self->{nginx_pid};
}

# QUIT, and nginx must be gone in time (10 s, 60 s under valgrind): a hung
# graceful shutdown is a failure of the test, not something to kill quietly
sub stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{nginx_pid} or return;
    kill 'QUIT', $pid;
    my $limit = $ENV{TT_VALGRIND} ? 60 : 10;
    my $until = time + $limit;
    while (time < $until) {
        return 1 if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.02;
    }
    my @left = `pgrep -g $pid`;
    kill 'KILL', -$pid;
    waitpid $pid, 0;
    fail("nginx exits within $limit s of QUIT");
    diag('killed: ' . join(' ', map { chomp; $_ } @left));
    return 0;
}

sub worker_pids {
    my ($self) = @_;
    my $master = $self->{nginx_pid};
    my @pids = grep { chomp; $_ } `pgrep -P $master`;
    return @pids;
}

sub spawn_log { $_[0]->_file('spawn.log') }

sub _file {
    my ($self, $name) = @_;
    open my $fh, '<', "$self->{dir}/$name" or return '';
    local $/;
    return <$fh>;
}

sub error_log {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/error.log" or return '';
    local $/;
    return <$fh>;
}

# sanitizer reports and alerts are failures wherever they happen
sub check_logs {
    my ($self) = @_;
    my $log = $self->error_log;
    my @bad = grep { /\[(alert|emerg|crit)\]/ } split /\n/, $log;
    @bad = grep { !/$self->{allow_log}/ } @bad if $self->{allow_log};
    ok(!@bad, 'no alert, crit or emerg in error.log')
        or diag(join "\n", @bad);
    my @san = glob("$self->{dir}/asan.* $self->{dir}/ubsan.*");
    ok(!@san, 'no sanitizer report') or do {
        for my $f (@san) {
            open my $fh, '<', $f; local $/; diag(<$fh>);
        }
    };
    my @crash = grep { /exited on signal/ } split /\n/, $log;
    ok(!@crash, 'no worker crashed') or diag(join "\n", @crash);
    if ($ENV{TT_VALGRIND}) {
        my @bad;
        for my $f (glob("$self->{dir}/valgrind.*")) {
            open my $fh, '<', $f or next;
            local $/;
            my $v = <$fh>;
            push @bad, $v if $v =~ /ERROR SUMMARY: [1-9]/;
        }
        ok(!@bad, 'valgrind has nothing to say') or diag(join "\n", @bad);
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->stop_nginx;
    $self->stop_redis;
}

# --- HTTP ----------------------------------------------------------------

# returns { status, headers (lowercased keys), body } or undef on timeout
sub http {
    my ($self, %req) = @_;
    my $method = $req{method} || 'GET';
    my $path = $req{path} || '/';
    my $body = $req{body};
    my $headers = $req{headers} || [];
    my $timeout = $req{timeout} || 10;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $req{port} || $self->{http_port}, Proto => 'tcp')
        or die "connect: $!";
    my $r = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
          . "Connection: close\r\n";
    my @h = @$headers;
    while (my ($k, $v) = splice @h, 0, 2) {
        $r .= "$k: $v\r\n";
    }
    $r .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    $r .= "\r\n";
    $r .= $body if defined $body;
    $s->blocking(1);
    print $s $r;

    my $raw = '';
    my $sel = IO::Select->new($s);
    my $until = time + $timeout;
    while (1) {
        my $left = $until - time;
        return undef if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($s, $raw, 65536, length $raw);
        last unless $n;
    }
    close $s;
    return parse_response($raw);
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return undef unless defined $head;
    my ($status_line, @lines) = split /\r\n/, $head;
    my ($status) = $status_line =~ m{^HTTP/\d\.\d (\d+)};
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }
    $body = '' unless defined $body;
    if (($h{'transfer-encoding'} || '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    }
    return { status => $status, headers => \%h, body => $body, raw => $raw };
}

# --- signing -------------------------------------------------------------

my %HASH = (
    md5    => [ \&Digest::MD5::md5, 64 ],
    sha1   => [ \&Digest::SHA::sha1, 64 ],
    sha224 => [ \&Digest::SHA::sha224, 64 ],
    sha256 => [ \&Digest::SHA::sha256, 64 ],
    sha384 => [ \&Digest::SHA::sha384, 128 ],
    sha512 => [ \&Digest::SHA::sha512, 128 ],
);

sub hmac_raw {
    my ($alg, $key, $data) = @_;
    my ($fn, $block) = @{ $HASH{$alg} or die "unknown $alg" };
    $key = $fn->($key) if length($key) > $block;
    $key .= "\0" x ($block - length $key);
    my $ipad = $key ^ ("\x36" x $block);
    my $opad = $key ^ ("\x5c" x $block);
    return $fn->($opad . $fn->($ipad . $data));
}

sub hmac_hex { unpack 'H*', hmac_raw(@_) }
sub hmac_b64 { MIME::Base64::encode_base64(hmac_raw(@_), '') }

my $JSON = JSON::PP->new->canonical;
sub json_decode { JSON::PP->new->utf8->decode($_[0]) }
sub json_encode { $JSON->encode($_[0]) }

# certificates for TLS tests, in $dir/tls: a CA ("ca"), a server's for
# 127.0.0.1 and localhost and a client's signed by it, and another CA
# ("other") that signed neither
sub tls_certs {
    my ($dir) = @_;
    my $d = "$dir/tls";
    mkdir $d;
    my $openssl = sub {
        my $out = `openssl @_ 2>&1`;
        die "openssl @_: $out" if $?;
    };
    for my $ca (qw(ca other)) {
        $openssl->("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-$ca"
                   . " -keyout $d/$ca.key -out $d/$ca.pem");
    }
    open my $ext, '>', "$d/ext" or die $!;
    print $ext "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    close $ext;
    for my $who (qw(server client)) {
        $openssl->("req -newkey rsa:2048 -nodes -subj /CN=test-$who"
                   . " -keyout $d/$who.key -out $d/$who.csr");
        $openssl->("x509 -req -in $d/$who.csr -CA $d/ca.pem"
                   . " -CAkey $d/ca.key -CAcreateserial -days 2"
                   . ($who eq 'server' ? " -extfile $d/ext" : '')
                   . " -out $d/$who.pem");
    }
    chmod 0644, glob("$d/*");
    return $d;
}

# the events a message's hash holds (HGETALL as a hash): the lines of the
# older "timeline" field, then each "@..." field as "field=value" in the
# order of its number
sub events_of {
    my ($h) = @_;
    my @lines = grep { length } split /\n/, $h->{timeline} // '';
    my @fields = sort { ($h->{$a} =~ /^(\d+)/)[0] <=> ($h->{$b} =~ /^(\d+)/)[0] }
                 grep { /^@/ } keys %$h;
    return (@lines, map { "$_=$h->{$_}" } @fields);
}

# Redis Cluster's slot of a key
# CRC16-XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster's
# keyHashSlot uses, table-driven
my @CRC16;
for my $i (0 .. 255) {
    my $crc = $i << 8;
    for (1 .. 8) {
        $crc = $crc & 0x8000 ? (($crc << 1) ^ 0x1021) : ($crc << 1);
        $crc &= 0xffff;
    }
    $CRC16[$i] = $crc;
}

sub crc16 {
    my ($s) = @_;
    my $crc = 0;
    for my $b (unpack 'C*', $s) {
        $crc = (($crc << 8) & 0xffff) ^ $CRC16[(($crc >> 8) ^ $b) & 0xff];
    }
    return $crc;
}

# the slot of a key: with a hash tag (the first "{", then the first "}"
# after it, with something between them) the tag alone is hashed; bytes,
# not characters (a wide string is hashed as UTF-8)
sub keyslot {
    my $key = $_[-1];               # also as a method: $c->keyslot($key)
    utf8::encode($key) if utf8::is_utf8($key);
    my $s = index $key, '{';
    if ($s >= 0) {
        my $e = index $key, '}', $s + 1;
        $key = substr($key, $s + 1, $e - $s - 1) if $e > $s + 1;
    }
    return crc16($key) % 16384;
}

# --- Infobip bodies ------------------------------------------------------

# a TikTok delivery report result, as Infobip documents it, with overrides
sub tiktok_dlr {
    my (%o) = @_;
    my %group = (PENDING => 1, UNDELIVERABLE => 2, DELIVERED => 3,
                 EXPIRED => 4, REJECTED => 5);
    my $g = $o{group} || 'DELIVERED';
    my $r = {
        bulkId => 'a28dd97c-2222-4fcf-99f1-0b557ed381da',
        price => { pricePerMessage => 0.01, currency => 'EUR' },
        status => {
            groupId => $group{$g} || 0, groupName => $g,
            id => $o{status_id} // 5,
            name => $o{name} || 'DELIVERED_TO_HANDSET',
            description => 'Message delivered to handset',
        },
        error => {
            groupId => 0, groupName => 'OK', id => 0,
            name => $o{error_name} || 'NO_ERROR', description => 'No Error',
            permanent => $o{permanent} ? JSON::PP::true : JSON::PP::false,
        },
        messageId => $o{id},
        to => 'u5NkbnslAgxpOelvH01Y+rs7Uw=',
        sender => '-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o',
        sentAt => '2023-09-26T10:52:15.457+0000',
        doneAt => $o{doneAt} || '2023-09-26T10:52:15.799+0000',
        messageCount => 1,
        platform => { entityId => 'promotional-traffic-entity',
                      applicationId => 'marketing-automation-application' },
    };
    $r->{callbackData} = $o{callbackData} if defined $o{callbackData};
    delete $r->{messageId} unless defined $o{id};
    return $r;
}

sub tiktok_seen {
    my (%o) = @_;
    my $r = {
        messageId => $o{id},
        from => '-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o',
        to => 'u5NkbnslAgxpOelvH01Y+rs7Uw=',
        sentAt => '2019-11-09T16:00:00.000+0000',
        seenAt => $o{seenAt} || '2019-11-09T16:00:05.000+0000',
        applicationId => 'marketing-automation-application',
        entityId => 'promotional-traffic-entity',
    };
    return $r;
}

# --- data-driven cases ---------------------------------------------------
#
# Each case: name; method (POST), path, headers (array), body (string), or
# results (array, wrapped in {"results":…}); sign => [alg, secret,
# header, format] to sign the exact body bytes; expect: status, body
# (exact), json (deep subset), like (regex), headers (hash); redis:
# [[command...], expected] pairs checked after the answer.

sub run_cases {
    my ($t, @cases) = @_;
    for my $c (@cases) {
        my $body = $c->{body};
        $body = json_encode({ results => $c->{results} })
            if !defined $body && $c->{results};
        my @headers = @{ $c->{headers} || [] };
        push @headers, 'Content-Type', 'application/json'
            if defined $body && !$c->{no_content_type}
               && !grep { lc($_) eq 'content-type' } @headers[grep { !($_ % 2) } 0 .. $#headers];
        if (my $s = $c->{sign}) {
            my ($alg, $secret, $hname, $fmt) = @$s;
            my $sig = ($fmt || 'hex') eq 'b64' ? hmac_b64($alg, $secret, $body)
                                                : hmac_hex($alg, $secret, $body);
            push @headers, $hname || 'X-Signature', $sig;
        }
        for my $cmd (@{ $c->{before} || [] }) {
            $t->redis(@$cmd);
        }
        my $res = $t->http(method => $c->{method} || 'POST',
                           path => $c->{path} || '/webhook',
                           headers => \@headers, body => $body);
        my $name = $c->{name};
        if (!$res) {
            fail("$name: no answer");
            next;
        }
        my $e = $c->{expect} || {};
        is($res->{status}, $e->{status}, "$name: status")
            if defined $e->{status};
        is($res->{body}, $e->{body}, "$name: body") if defined $e->{body};
        like($res->{body}, $e->{like}, "$name: body like") if $e->{like};
        if ($e->{json}) {
            my $got = eval { json_decode($res->{body}) };
            is_deeply(_subset($got, $e->{json}), $e->{json}, "$name: json")
                or diag($res->{body});
        }
        for my $h (sort keys %{ $e->{headers} || {} }) {
            is($res->{headers}{lc $h}, $e->{headers}{$h}, "$name: header $h");
        }
        my @checks = @{ $c->{redis} || [] };
        while (my ($cmd, $want) = splice @checks, 0, 2) {
            my $got = $t->redis(@$cmd);
            if (ref $want eq 'Regexp') {
                like($got, $want, "$name: @$cmd");
            } elsif (ref $want eq 'CODE') {
                ok($want->($got), "$name: @$cmd") or diag(explain $got);
            } else {
                is_deeply($got, $want, "$name: @$cmd");
            }
        }
    }
}

# the part of $got that $want talks about, for is_deeply
sub _subset {
    my ($got, $want) = @_;
    if (ref $want eq 'HASH' && ref $got eq 'HASH') {
        return { map { $_ => _subset($got->{$_}, $want->{$_}) }
                 grep { exists $got->{$_} } keys %$want };
    }
    if (ref $want eq 'ARRAY' && ref $got eq 'ARRAY') {
        return [ map { _subset($got->[$_], $want->[$_]) } 0 .. $#$got ];
    }
    return $got;
}

1;
