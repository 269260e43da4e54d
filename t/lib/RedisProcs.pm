package RedisProcs;

# More Redis processes beside the harness's one, for tests of more than one
# Redis: a redis-server (or a sentinel) on a given loopback address and
# port, in the test's temp dir, with a RESP client of its own; and a tiny
# DNS stand-in on loopback UDP that answers A queries for one name.

use strict;
use warnings;

use IO::Socket::INET;
use POSIX ();
use Socket ();
use Time::HiRes qw(sleep time);
use TikTokTest;

# RedisProcs->new($t, port => P, bind => '127.0.0.1', conf => "lines\n",
#                 sentinel => 1, name => 'tag', read_timeout => S)
# read_timeout: cmd gives up on a reply after S seconds (a frozen server)
# instead of waiting for ever
sub new {
    my ($class, $t, %o) = @_;
    my $self = bless {
        t => $t, port => $o{port} || TikTokTest::free_port(),
        bind => $o{bind} || '127.0.0.1', conf => $o{conf} || '',
        sentinel => $o{sentinel}, name => $o{name} || 'redis',
        read_timeout => $o{read_timeout},
    }, $class;
    return $self->start;
}

sub port { $_[0]{port} }
sub pid { $_[0]{pid} }
sub bind_addr { $_[0]{bind} }
sub addr { "$_[0]{bind}:$_[0]{port}" }

sub start {
    my ($self) = @_;
    my $dir = $self->{t}->dir . "/$self->{name}-$self->{port}";
    mkdir $dir;
    my $conf = "$dir/redis.conf";
    open my $fh, '>', $conf or die $!;
    print $fh "port $self->{port}\nbind $self->{bind}\ndir $dir\n"
        . "daemonize no\nlogfile $dir/log\n"
        . ($self->{sentinel} ? '' : "save \"\"\nappendonly no\n")
        . $self->{conf};
    close $fh;
    my @cmd = ('redis-server', $conf);
    push @cmd, '--sentinel' if $self->{sentinel};
    $self->{pid} = $self->{t}->_spawn({}, @cmd);
    my $until = time + 10;
    while (time < $until) {
        my $r = eval { $self->cmd('PING') };
        return $self if defined $r && $r eq 'PONG';
        sleep 0.05;
    }
    die "$self->{name} on $self->{bind}:$self->{port} did not start";
}

sub log {
    my ($self) = @_;
    open my $fh, '<', $self->{t}->dir . "/$self->{name}-$self->{port}/log"
        or return '';
    local $/;
    return <$fh>;
}

# one command on a kept connection; dies on an error reply
sub cmd {
    my ($self, @cmd) = @_;
    my $sock = $self->{sock};
    unless ($sock) {
        $sock = $self->{sock} = IO::Socket::INET->new(
            PeerAddr => $self->{bind}, PeerPort => $self->{port},
            Proto => 'tcp', Timeout => 2)
            or die "connect $self->{bind}:$self->{port}: $!";
        $sock->sockopt(Socket::SO_RCVTIMEO(),
                       pack('l!l!', $self->{read_timeout}, 0))
            if $self->{read_timeout};
    }
    my $req = '*' . scalar(@cmd) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @cmd;
    print $sock $req;
    my $r = eval { TikTokTest::_resp_read($sock) };
    if (my $e = $@) {
        delete $self->{sock};
        die $e;
    }
    return $r;
}

sub stop {
    my ($self, $sig) = @_;
    my $pid = delete $self->{pid} or return;
    delete $self->{sock};
    # from DESTROY at exit, waitpid would set the test's exit status
    local $?;
    kill $sig || 'TERM', $pid;
    waitpid $pid, 0;
}

sub DESTROY { $_[0]->stop('KILL') }


package RedisProcs::DNS;

# Answers A queries for one name with the address in a file (read at each
# query, so that a test can change it); AAAA and other names get no
# address.  Runs in a child until stop(), or 300 s at most.

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

sub new {
    my ($class, $t, %o) = @_;
    my $self = bless { t => $t, name => lc $o{name},
                       file => $t->dir . '/dns-answer',
                       port => $o{port} || TikTokTest::free_port() }, $class;
    $self->answer($o{address});
    return $self->start;
}

sub port { $_[0]{port} }

sub answer {
    my ($self, $addr) = @_;
    open my $fh, '>', "$self->{file}.new" or die $!;
    print $fh $addr;
    close $fh;
    rename "$self->{file}.new", $self->{file};
}

sub start {
    my ($self) = @_;
    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $self->{port}, Proto => 'udp', ReuseAddr => 1)
        or die "dns: $!";
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid) {
        close $sock;
        $self->{pid} = $pid;
        return $self;
    }
    my $until = time + 300;
    my $parent = getppid();
    my $sel = IO::Select->new($sock);
    while (time < $until && getppid() == $parent) {
        next unless $sel->can_read(0.5);
        my $peer = $sock->recv(my $q, 512) or next;
        my $a = $self->_reply($q);
        $sock->send($a, 0, $peer) if defined $a;
    }
    POSIX::_exit(0);
}

sub _reply {
    my ($self, $q) = @_;
    return undef if length $q < 17;
    my ($id, $flags, $qd) = unpack 'n n n', $q;
    my $pos = 12;
    my @labels;
    while ($pos < length $q) {
        my $n = ord substr($q, $pos, 1);
        $pos++;
        last if $n == 0;
        push @labels, substr($q, $pos, $n);
        $pos += $n;
    }
    my ($type, $class) = unpack 'n n', substr($q, $pos, 4);
    my $question = substr($q, 12, $pos + 4 - 12);
    my $name = lc join '.', @labels;
    open my $fh, '<', $self->{file};
    my $addr = $fh ? <$fh> : undef;
    my @answers;
    if ($name eq $self->{name} && $type == 1 && $addr
        && $addr =~ /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/)
    {
        push @answers, pack('n n n N n C4', 0xc00c, 1, 1, 1, 4,
                            $1, $2, $3, $4);
    }
    my $rcode = $name eq $self->{name} ? 0 : 3;
    return pack('n n n n n n', $id, 0x8180 | $rcode, 1, scalar @answers,
                0, 0) . $question . join('', @answers);
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    local $?;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub DESTROY { $_[0]->stop }

1;
