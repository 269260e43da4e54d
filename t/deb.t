#!/usr/bin/perl
# The Debian package: built with dh_nginx, installed with apt into the
# system's nginx, it loads through modules-enabled and serves a webhook with
# nothing but a site config.  Changes the system: runs only as root with
# TT_DEB=1 (CI), and removes the package afterwards.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use TikTokTest;

plan skip_all => 'set TT_DEB=1 (as root) to install the package into the system'
    unless $ENV{TT_DEB} && $> == 0;

my $root = "$FindBin::Bin/..";
my $deb = `$root/.ci/deb 2>&1`;
chomp $deb;
is($?, 0, 'the package builds') or diag $deb;
like($deb, qr{/libnginx-mod-tiktok-reports_[^/]+_amd64\.deb$}, 'named like Debian\'s nginx modules');

my $info = `dpkg-deb -I $deb`;
like($info, qr/Depends:.*nginx-abi-/, 'depends on the nginx ABI it was built for');
# hiredis is linked in statically, so nchan's hiredis cannot replace it
unlike($info, qr/Depends:.*libhiredis/, 'does not depend on the shared libhiredis');
like($info, qr/^ Static-Built-Using: hiredis \(= [^)]+\)$/m,
     'names the hiredis linked into it');
my $files = `dpkg-deb -c $deb`;
like($files, qr{usr/lib/nginx/modules/ngx_tiktok_reports_module\.so}, 'ships the module');
like($files, qr{usr/share/nginx/modules-available/mod-tiktok-reports\.conf},
     'ships the modules-available snippet');

system("pgrep -x nginx >/dev/null && nginx -s quit 2>/dev/null; sleep 0.5");
my $out = `DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $deb 2>&1`;
is($?, 0, 'apt-get install ./….deb') or diag $out;
ok(scalar(grep { -l } glob('/etc/nginx/modules-enabled/*-mod-tiktok-reports.conf')),
   'enabled in /etc/nginx/modules-enabled');

my $t = TikTokTest->new;
$t->start_redis;
my $site = '/etc/nginx/sites-enabled/tiktok-reports-deb-test';
my $port = $t->http_port;
my $rport = $t->redis_port;
open my $fh, '>', $site or die "$site: $!";
print $fh <<"EOF2";
server {
    listen 127.0.0.1:$port;
    tiktok_reports_redis 127.0.0.1:$rport;
    location = /webhooks/tiktok {
        tiktok_reports_webhook;
        tiktok_reports_signature hmac-sha256;
        tiktok_reports_secret deb-secret;
    }
    location /tiktok/status/ {
        tiktok_reports_status;
    }
}
EOF2
close $fh;

# the stock default site listens on port 80; step it aside if 80 is taken
my $default = '/etc/nginx/sites-enabled/default';
my $moved;
if (-e $default && !IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 80,
                                          Listen => 1, ReuseAddr => 1)) {
    rename $default, "$default.tiktok-test" and $moved = 1;
}

# with nginx-extras, modules-enabled loads nchan (its own hiredis) and lua
# next to ours: a worker crash would show in the system's error log
my $elog = '/var/log/nginx/error.log';
my $elog_size = -s $elog || 0;
my @others = map { m{/\d+-mod-([^/]+)\.conf$} ? $1 : () }
             glob('/etc/nginx/modules-enabled/*.conf');
note("modules enabled: @others");

$out = `nginx -t 2>&1`;
is($?, 0, 'the system nginx accepts the site config') or diag $out;
$out = `nginx 2>&1`;
is($?, 0, 'the system nginx starts') or diag $out;
sleep 0.5;

my $body = json_encode({ results => [ tiktok_dlr(id => 'deb-1') ] });
my $res = $t->http(method => 'POST', path => '/webhooks/tiktok',
    headers => [ 'Content-Type' => 'application/json',
                 'X-Signature' => hmac_hex('sha256', 'deb-secret', $body) ],
    body => $body);
is($res && $res->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}',
   'the packaged module serves the webhook');
is($t->redis('HGET', 'tiktok:msg:{deb-1}', 'status'), 'DELIVERED', 'and stores in Redis');
$res = $t->http(path => '/tiktok/status/deb-1');
is($res->{status}, 200, 'and answers lookups');

my @crashes;
if (open my $lf, '<', $elog) {
    seek $lf, $elog_size, 0;
    @crashes = grep { /exited on signal/ } <$lf>;
}
is(scalar @crashes, 0, 'no worker of the system nginx crashed') or diag $crashes[0];

system('nginx -s quit; sleep 0.5');
unlink $site;
rename "$default.tiktok-test", $default if $moved;
$out = `DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq libnginx-mod-tiktok-reports 2>&1`;
is($?, 0, 'the package is removed again') or diag $out;
ok(!glob('/etc/nginx/modules-enabled/*-mod-tiktok-reports.conf'), 'and disabled');

done_testing;
